"""Sequence classification: one label per text (or several, with ``task.multi_label``), any number of labels."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from peftkit.config.schema import HeadConfig, option
from peftkit.errors import PeftkitError
from peftkit.heads.base import Head, column_values, logits_only, require_columns, sigmoid, softmax, tokenizing_label
from peftkit.heads.truncation import Cut, truncated_inputs
from peftkit.registry import HEADS

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


class ClassificationConfig(HeadConfig):
    multi_label: bool = option(
        False, "each text may carry several labels (sigmoid per label, binary cross-entropy)"
    )
    label_separator: str = option("|", "multi_label: separator of several labels in one label cell, e.g. 'a|b'")
    threshold: float = option(0.5, "multi_label: a label is predicted when its probability reaches this", gt=0, lt=1)
    class_weights: Literal["none", "balanced"] | dict[str, float] = option(
        "none",
        "loss weight per label: none, balanced (inverse training frequency) or {label: weight} (others 1.0)",
    )
    pooling: Literal["auto", "cls", "pooler", "mean", "last"] = option(
        "auto", "the vector the classifier reads: cls (first token), pooler (BERT's tanh(dense(CLS))), mean (of "
        "the non-padding tokens), last (decoder LMs' last token); auto = what the catalogue model was trained with "
        "(mean for sentence encoders), else the architecture's own"
    )
    truncate: Cut = option(
        "end", "which part of a text longer than data.max_length is cut: end (the start is kept), start (the end is "
        "kept) or middle (the first quarter and the last three quarters of the tokens kept; long reviews)"
    )


def same_number(names: Iterable[str]) -> tuple[str, str] | None:
    """Two of ``names`` that spell one number differently, one of them as a decimal ('1' and '1.0', as a column
    read once as integers and once as floats gives), or None; codes such as '01' and '1' stay distinct."""
    seen: dict[float, str] = {}
    for name in sorted(set(names), key=lambda n: ("." in n, n)):
        try:
            value = float(name)
        except ValueError:
            continue
        first = seen.setdefault(value, name)
        if first != name and math.isfinite(value) and "." in first + name:
            return first, name
    return None


def _spelling_hint(label: str, known: Iterable[str]) -> str:
    pair = same_number([label, *known])
    return f"; '{pair[0]}' and '{pair[1]}' are one number written two ways: write each label one way" if pair else ""


def _label_id(label: str, label2id: dict[str, int]) -> int | None:
    """A label cell as an id: its name, or (when the data holds ids) a number below the label count."""
    if label in label2id:
        return label2id[label]
    if label.isdigit() and int(label) < len(label2id) and not any(name.isdigit() for name in label2id):
        return int(label)
    return None


@HEADS.register("classification")
class ClassificationHead(Head):
    description = "labels per text (topic, intent, spam; multi-label optional); accuracy, macro P/R/F1"
    kind = "sequence_classification"
    config: ClassificationConfig

    def _cell_labels(self, value: Any) -> list[str]:
        """The label names of one cell: one name, or for multi-label a list or a separated string."""
        if not self.config.multi_label:
            return [str(value)]
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value if str(v).strip()]
        return [part.strip() for part in str(value).split(self.config.label_separator) if part.strip()]

    def read_labels(self, dataset: Dataset, column: str) -> list[str]:
        if self.config.multi_label:
            return sorted({name for cell in column_values(dataset, column) for name in cell})
        return sorted({str(v) for v in column_values(dataset, column)})

    def standardize(self, dataset: Dataset, data_cfg: Any, split: str) -> Dataset:
        text_col, label_col = data_cfg.text_column, data_cfg.label_column
        require_columns(dataset, split, ((text_col, "data.text_column"), (label_col, "data.label_column")))
        texts, labels = column_values(dataset, text_col), column_values(dataset, label_col)
        for row, (text, label) in enumerate(zip(texts, labels, strict=True), start=1):
            if not isinstance(text, str) or not text.strip():
                raise PeftkitError(f"data ({split} split) row {row}: empty or missing text in column '{text_col}'")
            if label is None or (isinstance(label, str) and not label.strip()) or not self._cell_labels(label):
                raise PeftkitError(f"data ({split} split) row {row}: missing label in column '{label_col}'")
            declared = {name: i for i, name in enumerate(self.config.labels)}
            for name in self._cell_labels(label) if declared else ():
                if _label_id(name, declared) is None:
                    raise PeftkitError(
                        f"data ({split} split) row {row}: label '{name}' is not one of task.labels "
                        f"({', '.join(declared)}){_spelling_hint(name, declared)}"
                    )
        names = [self._cell_labels(v) if self.config.multi_label else str(v) for v in labels]
        pair = same_number(name for cell in names for name in (cell if isinstance(cell, list) else [cell]))
        if pair:
            raise PeftkitError(
                f"data ({split} split), column '{label_col}': labels '{pair[0]}' and '{pair[1]}' are one number "
                "written two ways and would become two classes; write each label one way"
            )
        from datasets import Dataset

        return Dataset.from_dict({"text": texts, "label": names})

    def check_training_labels(self, train: Dataset, data_cfg: Any, source: str) -> None:
        found = self.read_labels(train, self.label_field)
        if len(found) < 2:
            raise PeftkitError(
                f"data '{source}' (train split): column '{data_cfg.label_column}' holds only the label "
                f"{', '.join(map(repr, found)) or '(none)'}; a classifier needs at least two labels to learn"
            )

    def label_ids(self, dataset: Dataset, label2id: dict[str, int]) -> list[Any]:
        """Label ids per row (multi-hot float vectors for multi-label); a label outside ``label2id`` is an error."""
        ids: list[Any] = []
        for row, cell in enumerate(column_values(dataset, "label")):
            names = cell if isinstance(cell, list) else [cell]
            found = [_label_id(name, label2id) for name in names]
            if None in found:
                bad, text = names[found.index(None)], dataset[row]["text"]  # the text only to name the row
                raise PeftkitError(
                    f"data: label '{bad}' (text {text[:40]!r}) is not one of the training labels "
                    f"({', '.join(label2id)}){_spelling_hint(bad, label2id) or '; list every label in task.labels'}"
                )
            if self.config.multi_label:
                hot = [0.0] * len(label2id)
                for i in found:
                    hot[i] = 1.0
                ids.append(hot)
            else:
                ids.append(found[0])
        return ids

    def tokenize(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 label2id: dict[str, int]) -> Dataset:
        labels = self.label_ids(dataset, label2id)
        encoded = dataset.map(
            lambda batch: truncated_inputs(tokenizer, batch["text"], max_length, self.config.truncate),
            batched=True, remove_columns=dataset.column_names, desc=tokenizing_label(),
        )
        return encoded.add_column("labels", labels)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def model_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        kwargs = super().model_kwargs(label_names)
        kwargs["problem_type"] = (
            "multi_label_classification" if self.config.multi_label else "single_label_classification"
        )
        return kwargs

    def class_weight_vector(self, label_names: list[str], train: Dataset) -> list[float] | None:
        """Loss weight per label id from ``task.class_weights``; for multi-label, the positive-class weights."""
        setting = self.config.class_weights
        if setting == "none":
            return None
        if isinstance(setting, dict):
            unknown = sorted(set(setting) - set(label_names))
            if unknown:
                raise PeftkitError(
                    f"task.class_weights: '{unknown[0]}' is not one of the labels ({', '.join(label_names)})"
                )
            return [float(setting.get(name, 1.0)) for name in label_names]
        import numpy as np

        labels = np.asarray(column_values(train, "labels"))
        if self.config.multi_label:
            positives = labels.sum(axis=0)
            return [float((len(labels) - p) / max(p, 1.0)) for p in positives]
        counts = np.bincount(labels, minlength=len(label_names))
        return [float(len(labels) / (len(label_names) * max(c, 1))) for c in counts]

    def loss_fn(self, label_names: list[str], train: Dataset) -> Callable[[Any, Any], Any] | None:
        weights = self.class_weight_vector(label_names, train)
        if weights is None:
            return None
        import torch

        weight = torch.tensor(weights, dtype=torch.float32)
        on_device: dict[torch.device, torch.Tensor] = {}  # copied to each device once, not every step

        def weighted(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            w = on_device.get(logits.device)
            if w is None:
                w = on_device[logits.device] = weight.to(logits.device)
            if self.config.multi_label:
                return torch.nn.functional.binary_cross_entropy_with_logits(
                    logits.float(), labels.float(), pos_weight=w
                )
            return torch.nn.functional.cross_entropy(logits.float().view(-1, len(weights)), labels.view(-1), weight=w)

        return weighted

    def compute_metrics(self, label_names: list[str]) -> Callable[[Any], dict[str, Any]]:
        import numpy as np
        from sklearn.metrics import (
            accuracy_score,
            confusion_matrix,
            multilabel_confusion_matrix,
            precision_recall_fscore_support,
        )

        ids = list(range(len(label_names)))

        def metrics(prediction: Any) -> dict[str, Any]:
            logits, gold = np.asarray(logits_only(prediction.predictions)), np.asarray(prediction.label_ids)
            if self.config.multi_label:
                predicted = (sigmoid(logits) >= self.config.threshold).astype(int)
                gold = gold.astype(int)
                matrices = multilabel_confusion_matrix(gold, predicted, labels=ids).tolist()
                _, _, f1_micro, _ = precision_recall_fscore_support(gold, predicted, average="micro", zero_division=0)
                extra: dict[str, Any] = {"f1_micro": float(f1_micro), "confusion_matrix": matrices}
            else:
                predicted = logits.argmax(axis=-1)
                extra = {"confusion_matrix": confusion_matrix(gold, predicted, labels=ids).tolist()}
            precision, recall, f1, _ = precision_recall_fscore_support(
                gold, predicted, labels=ids, average="macro", zero_division=0
            )
            return {
                "accuracy": float(accuracy_score(gold, predicted)),
                "precision_macro": float(precision),
                "recall_macro": float(recall),
                "f1_macro": float(f1),
                **extra,
            }

        return metrics

    def predict(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                label_names: list[str], batch_size: int, max_length: int) -> list[dict[str, Any]]:
        results = super().predict(model, tokenizer, texts, label_names, batch_size, max_length)
        if not self.config.multi_label:
            for result in results:
                del result["probabilities"]
        return results

    def predict_batch(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                      label_names: list[str], max_length: int, device: torch.device) -> list[dict[str, Any]]:
        """Best label (multi-label: every label over the threshold), its probability and every label's, per text;
        ``predict`` drops every label's probability again for single-label classification."""
        encoded = truncated_inputs(tokenizer, texts, max_length, self.config.truncate)
        inputs = tokenizer.pad(encoded, return_tensors="pt")
        logits = model(**inputs.to(device)).logits.float().cpu().numpy()
        probabilities = sigmoid(logits) if self.config.multi_label else softmax(logits)
        results: list[dict[str, Any]] = []
        for text, probs in zip(texts, probabilities, strict=True):
            best = int(probs.argmax())
            result = {
                "text": text,
                "label": label_names[best],
                "probability": float(probs[best]),
                "probabilities": {name: float(p) for name, p in zip(label_names, probs, strict=True)},
            }
            if self.config.multi_label:
                result["labels"] = [n for n, p in result["probabilities"].items() if p >= self.config.threshold]
            results.append(result)
        return results

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        if "labels" in prediction:
            shown = ",".join(f"{n}:{prediction['probabilities'][n]:.3f}" for n in prediction["labels"]) or "-"
            return f"{shown}\t{prediction['text']}"
        return f"{prediction['label']}\t{prediction['probability']:.3f}\t{prediction['text']}"
