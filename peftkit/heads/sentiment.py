"""Sentiment: classification with sentiment label defaults and a polarity score in predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftkit.config.schema import option
from peftkit.heads.classification import ClassificationConfig, ClassificationHead
from peftkit.registry import HEADS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


class SentimentConfig(ClassificationConfig):
    head: str = option("sentiment", "task head (`peftkit heads` lists them)")
    labels: list[str] = option(["negative", "positive"], "label names in id order, most negative first")
    positive_label: str = option("positive", "label whose probability counts towards +1 polarity")
    negative_label: str = option("negative", "label whose probability counts towards −1 polarity")


@HEADS.register("sentiment")
class SentimentHead(ClassificationHead):
    description = "classification with sentiment labels; predictions add polarity = P(positive) − P(negative)"
    config: SentimentConfig

    def predict_batch(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                      label_names: list[str], max_length: int, device: torch.device) -> list[dict[str, Any]]:
        results = super().predict_batch(model, tokenizer, texts, label_names, max_length, device)
        for result in results:
            probs = result["probabilities"]
            result["polarity"] = probs.get(self.config.positive_label, 0.0) - probs.get(self.config.negative_label, 0.0)
        return results

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        return (f"{prediction['label']}\t{prediction['probability']:.3f}\t"
                f"polarity={prediction['polarity']:+.3f}\t{prediction['text']}")
