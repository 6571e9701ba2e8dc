"""A third-party task head, registered through the `peftkit.heads` entry point group (see pyproject.toml)."""

from __future__ import annotations

from typing import Any

from peftkit.heads.classification import ClassificationConfig, ClassificationHead
from peftkit.schema import option


class TopicConfig(ClassificationConfig):
    head: str = option("demo_topic", "task head (`peftkit heads` lists them)")
    marker: str = option(">>", "demo_topic: text printed before each predicted label")


class TopicHead(ClassificationHead):
    name = "demo_topic"
    description = "demo plugin: classification whose predictions carry a marker"
    config_cls = TopicConfig
    config: TopicConfig

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        return f"{self.config.marker} {prediction['label']}\t{prediction['text']}"
