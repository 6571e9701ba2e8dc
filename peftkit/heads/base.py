"""What a task head declares: model class, peft task type, saved modules, tokenization, metrics, decoding."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
from datasets import Dataset
from peft import TaskType
from transformers import PreTrainedTokenizerBase

from peftkit.schema import HeadConfig

#: Module names transformers uses for task heads; kept out of quantization and saved with the adapter.
KNOWN_HEAD_MODULES = ("classifier", "score", "qa_outputs")


class Head:
    """Base class of a task head. Subclass it, set the class attributes, and register it:

    ``@HEADS.register("name")`` on the subclass (or an entry point in the ``peftkit.heads`` group).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "sequence_classification", "token_classification" or "causal_lm"; methods declare which
    config_cls: ClassVar[type[HeadConfig]] = HeadConfig
    auto_class: ClassVar[Any] = None
    task_type: ClassVar[TaskType] = TaskType.SEQ_CLS
    main_metric: ClassVar[str] = "accuracy"
    label_field: ClassVar[str] = "label"  # canonical column that holds label names after standardize()
    #: The model's own loss divides by the Trainer's ``num_items_in_batch`` (causal LM token counts). False: the
    #: loss is a per-batch mean, which the Trainer must not rescale by the process count.
    token_level_loss: ClassVar[bool] = False

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
        """Decoded predictions for raw texts, one dict per text, for `peftkit predict`."""
        raise NotImplementedError

    def samples(self, model: Any, tokenizer: PreTrainedTokenizerBase, test: Dataset,
                max_length: int) -> dict[str, Any]:
        """Extra test results made with the trained model itself (e.g. generated responses); none by default."""
        return {}

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        """One line of `peftkit predict` output."""
        raise NotImplementedError


def eval_batches(model: Any, texts: list[str], batch_size: int) -> Iterator[tuple[list[str], Any]]:
    """Put ``model`` in evaluation mode and yield ``texts`` in chunks of ``batch_size``, each with the model's
    device (the loop every head's ``predict`` runs)."""
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        yield texts[start:start + batch_size], device


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64."""
    return 1 / (1 + np.exp(-logits.astype(np.float64)))
