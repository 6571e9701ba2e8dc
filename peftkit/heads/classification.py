"""Sequence classification: one label per text, any number of labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from peft import TaskType
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from peftkit.errors import PeftkitError
from peftkit.heads.base import Head, softmax
from peftkit.registry import HEADS
from peftkit.schema import HeadConfig


@HEADS.register("classification")
class ClassificationHead(Head):
    name = "classification"
    description = "one label per text (topic, intent, spam, …); accuracy and macro P/R/F1"
    kind = "sequence_classification"
    config_cls = HeadConfig
    auto_class = AutoModelForSequenceClassification
    task_type = TaskType.SEQ_CLS
    main_metric = "accuracy"

    def read_labels(self, dataset: Dataset, column: str) -> list[str]:
        return sorted({str(v) for v in dataset[column]})

    def standardize(self, dataset: Dataset, data_cfg: Any, split: str) -> Dataset:
        text_col, label_col = data_cfg.text_column, data_cfg.label_column
        for column, key in ((text_col, "text_column"), (label_col, "label_column")):
            if column not in dataset.column_names:
                raise PeftkitError(
                    f"data ({split} split): column '{column}' (data.{key}) not found; "
                    f"columns are: {', '.join(dataset.column_names)}"
                )
        texts, labels = dataset[text_col], dataset[label_col]
        for row, (text, label) in enumerate(zip(texts, labels, strict=True), start=1):
            if not isinstance(text, str) or not text.strip():
                raise PeftkitError(f"data ({split} split) row {row}: empty or missing text in column '{text_col}'")
            if label is None or (isinstance(label, str) and not label.strip()):
                raise PeftkitError(f"data ({split} split) row {row}: missing label in column '{label_col}'")
        return Dataset.from_dict({"text": texts, "label": [str(v) for v in labels]})

    def tokenize(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 label2id: dict[str, int]) -> Dataset:
        unknown = sorted(set(dataset["label"]) - set(label2id))
        if unknown:
            row = dataset["label"].index(unknown[0]) + 1
            raise PeftkitError(
                f"data row {row}: label '{unknown[0]}' is not one of task.labels ({', '.join(label2id)})"
            )

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
            encoded["labels"] = [label2id[label] for label in batch["label"]]
            return encoded

        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable:
        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, label_names: list[str]) -> Callable[[Any], dict[str, Any]]:
        def metrics(prediction: Any) -> dict[str, Any]:
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            predicted = np.asarray(logits).argmax(axis=-1)
            gold = np.asarray(prediction.label_ids)
            precision, recall, f1, _ = precision_recall_fscore_support(
                gold, predicted, labels=list(range(len(label_names))), average="macro", zero_division=0
            )
            return {
                "accuracy": float(accuracy_score(gold, predicted)),
                "precision_macro": float(precision),
                "recall_macro": float(recall),
                "f1_macro": float(f1),
                "confusion_matrix": confusion_matrix(gold, predicted, labels=list(range(len(label_names)))).tolist(),
            }

        return metrics

    def predict(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                label_names: list[str], batch_size: int, max_length: int) -> list[dict[str, Any]]:
        results = self._predict_probabilities(model, tokenizer, texts, label_names, batch_size, max_length)
        for result in results:
            del result["probabilities"]
        return results

    @torch.no_grad()
    def _predict_probabilities(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                               label_names: list[str], batch_size: int, max_length: int) -> list[dict[str, Any]]:
        """Best label, its probability and every label's probability, per text."""
        model.eval()
        device = next(model.parameters()).device
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            inputs = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            logits = model(**inputs.to(device)).logits.float().cpu().numpy()
            for text, probs in zip(chunk, softmax(logits), strict=True):
                best = int(probs.argmax())
                results.append({
                    "text": text,
                    "label": label_names[best],
                    "probability": float(probs[best]),
                    "probabilities": {name: float(p) for name, p in zip(label_names, probs, strict=True)},
                })
        return results

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        return f"{prediction['label']}\t{prediction['probability']:.3f}\t{prediction['text']}"
