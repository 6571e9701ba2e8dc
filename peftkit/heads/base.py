"""What a task head declares: model class, peft task type, saved modules, tokenization, metrics, decoding."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from peftkit.config.schema import HeadConfig, declared_options
from peftkit.errors import PeftkitError

if TYPE_CHECKING:  # declaring a head imports no torch / transformers / peft / datasets: light verbs list heads
    import numpy as np
    import torch
    from datasets import Dataset
    from peft import TaskType
    from transformers import PreTrainedTokenizerBase

#: Module names transformers uses for task heads; kept out of quantization and saved with the adapter.
KNOWN_HEAD_MODULES = ("classifier", "score", "qa_outputs")
#: The split the data pipeline is having a head tokenize, for the progress bar's label (`tokenizing_label`).
TOKENIZING_SPLIT: ContextVar[str] = ContextVar("tokenizing_split", default="")


def tokenizing_label() -> str:
    """The label of a head's tokenizing progress bar: "tokenizing" and the split, e.g. "tokenizing validation"."""
    split = TOKENIZING_SPLIT.get()
    return f"tokenizing {split}" if split else "tokenizing"


#: A head's kind → the transformers auto class that builds its model and peft's task type, by name; a head of a kind
#: not listed here sets ``auto_class`` and ``task_type`` itself.
KINDS: dict[str, tuple[str, str]] = {
    "sequence_classification": ("AutoModelForSequenceClassification", "SEQ_CLS"),
    "token_classification": ("AutoModelForTokenClassification", "TOKEN_CLS"),
    "causal_lm": ("AutoModelForCausalLM", "CAUSAL_LM"),
}


class _FromKind:
    """``auto_class`` / ``task_type`` of a head class that does not set them: what its ``kind`` names in KINDS,
    imported when first read, so that declaring a head imports neither transformers nor peft."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type[Head]) -> Any:
        names = KINDS.get(owner.kind)
        if names is None:
            return None
        if self.name == "auto_class":
            import transformers

            return getattr(transformers, names[0])
        from peft import TaskType

        return TaskType(names[1])


class Head:
    """Base class of a task head. Subclass it, set the class attributes, and register it:

    ``@HEADS.register("name")`` on the subclass (or an entry point in the ``peftkit.heads`` group).
    The options class is the type of ``config`` (``config: NerConfig``), declared once: it becomes ``config_cls``;
    ``auto_class`` and ``task_type`` follow from ``kind`` (KINDS) unless the subclass sets them.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "sequence_classification", "token_classification" or "causal_lm"; methods declare which
    config_cls: ClassVar[type[HeadConfig]] = HeadConfig
    config: HeadConfig
    auto_class: ClassVar[Any] = _FromKind()
    task_type: ClassVar[TaskType | None] = _FromKind()  # type: ignore[assignment]
    main_metric: ClassVar[str] = "accuracy"
    label_field: ClassVar[str] = "label"  # canonical column that holds label names after standardize()
    #: The model's own loss divides by the Trainer's ``num_items_in_batch`` (causal LM token counts). False: the
    #: loss is a per-batch mean, which the Trainer must not rescale by the process count.
    token_level_loss: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_cls" not in vars(cls):
            cls.config_cls = declared_options(cls) or cls.config_cls

    def __init__(self, config: HeadConfig) -> None:
        if not isinstance(config, self.config_cls):  # e.g. a bare HeadConfig: keep what was set, fill our defaults
            fields = self.config_cls.model_fields
            config = self.config_cls(**{k: v for k, v in config.model_dump(exclude_unset=True).items() if k in fields})
        self.config = config

    def read_labels(self, dataset: Dataset, column: str) -> list[str]:
        """Label names found in a data set, in a stable order."""
        raise NotImplementedError

    def standardize(self, dataset: Dataset, data_cfg: Any, split: str) -> Dataset:
        """Rename and check the user's columns into the head's canonical ones, naming bad rows."""
        raise NotImplementedError

    def check_training_labels(self, train: Dataset, data_cfg: Any, source: str) -> None:
        """Refuse a standardized training split a classifier cannot learn from (a single label), naming ``source``
        and the column; heads without labels take any."""

    def tokenize(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 label2id: dict[str, int]) -> Dataset:
        """Model inputs and label ids for every row (done once, cached by `datasets`)."""
        raise NotImplementedError

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable:
        """Pads each batch to its own longest example."""
        raise NotImplementedError

    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        """Keyword arguments for ``auto_class.from_pretrained`` (label count and names)."""
        return {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }

    def trainer_kwargs(self) -> dict[str, Any]:
        """Extra Trainer keyword arguments for training and evaluation, e.g. ``preprocess_logits_for_metrics``."""
        return {}

    def loss_fn(self, label_names: list[str], train: Dataset) -> Callable[[Any, Any], Any] | None:
        """A custom training loss ``(logits, labels) -> loss``; None = the model's own loss.

        ``train`` is the tokenized training split (``labels`` column), e.g. for class frequencies.
        """
        return None

    def compute_metrics(self, label_names: list[str]) -> Callable[[Any], dict[str, Any]]:
        """A Trainer ``compute_metrics`` function for this head."""
        raise NotImplementedError

    def predict(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                label_names: list[str], batch_size: int, max_length: int) -> list[dict[str, Any]]:
        """Decoded predictions for raw texts, one dict per text, for `peftkit predict`: ``predict_batch`` on
        chunks of ``batch_size`` texts, the model in evaluation mode, without gradients."""
        import torch

        model.eval()
        device = next(model.parameters()).device
        results: list[dict[str, Any]] = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                results += self.predict_batch(model, tokenizer, chunk, label_names, max_length, device)
        return results

    def predict_batch(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                      label_names: list[str], max_length: int, device: torch.device) -> list[dict[str, Any]]:
        """``predict`` for one batch of texts, whose model inputs go to ``device``."""
        raise NotImplementedError

    def samples(self, model: Any, tokenizer: PreTrainedTokenizerBase, test: Dataset,
                max_length: int) -> dict[str, Any]:
        """Extra test results made with the trained model itself (e.g. generated responses); none by default."""
        return {}

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        """One line of `peftkit predict` output."""
        raise NotImplementedError


def column_values(dataset: Dataset, name: str) -> list[Any]:
    """Every value of column ``name``, in row order, as a list. Since datasets 4, ``dataset[name]`` is a lazy column
    that formats one row per step when iterated (15 s over THUCNews' 100,000 rows); a slice reads it in one Arrow
    call, honouring ``select`` and ``shuffle``."""
    return dataset[name][:]


def require_columns(dataset: Dataset, split: str, columns: Iterable[tuple[str, str]]) -> None:
    """Refuse a data split without one of ``columns``: (column name, the option that names it) pairs."""
    for column, key in columns:
        if column not in dataset.column_names:
            raise PeftkitError(
                f"data ({split} split): column '{column}' ({key}) not found; "
                f"columns are: {', '.join(dataset.column_names)}"
            )


def logits_only(output: Any) -> Any:
    """The logits of model output that may come as a tuple (logits first, e.g. with hidden states)."""
    return output[0] if isinstance(output, tuple) else output


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64."""
    import numpy as np

    return 1 / (1 + np.exp(-logits.astype(np.float64)))
