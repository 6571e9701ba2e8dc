"""A third-party task head, registered through the `peftkit.heads` entry point group (see pyproject.toml)."""

from __future__ import annotations

from typing import Any

from peftkit.config.schema import option
from peftkit.heads.classification import ClassificationConfig, ClassificationHead
from peftkit.methods.lora import LoraMethod, LoraOptions


class TopicConfig(ClassificationConfig):
    head: str = option("demo_topic", "task head (`peftkit heads` lists them)")
    marker: str = option(">>", "demo_topic: text printed before each predicted label")


class TopicHead(ClassificationHead):
    description = "demo plugin: classification whose predictions carry a marker"
    config_cls = TopicConfig
    config: TopicConfig

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        return f"{self.config.marker} {prediction['label']}\t{prediction['text']}"


class DemoLoraOptions(LoraOptions):
    name: str = option("demo_lora", "fine-tuning method (`peftkit methods` lists them)")
    r: int = option(2, "rank of the low-rank update", ge=1)


class DemoLoraMethod(LoraMethod):
    """A third-party method through the `peftkit.methods` entry point group: LoRA with rank 2 by default."""

    description = "demo plugin: LoRA with rank 2 by default"
    config_cls = DemoLoraOptions
    quantization_modes = ("none",)
