"""Every recipe option with its default and help: the source of `peftkit options` and the README table."""

from __future__ import annotations

import json
from typing import Any

from peftkit.config.schema import HeadConfig, MethodConfig, Section
from peftkit.config.sections import Recipe
from peftkit.registry import HEADS, METHODS


def _shown(default: Any) -> str:
    return json.dumps(default, ensure_ascii=False)


def describe_options() -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every option of every section, method and head: the docs' source.

    An option that several methods (or heads) share with the same default and help is listed once.
    """
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type[Section], prefix: str) -> None:
        for name, field in cls.model_fields.items():
            annotation = field.annotation
            if name in ("method", "task"):
                continue
            if isinstance(annotation, type) and issubclass(annotation, Section):
                walk(annotation, f"{prefix}{name}.")
            else:
                rows.append((f"{prefix}{name}", _shown(field.get_default(call_default_factory=True)),
                             field.description or ""))

    walk(Recipe, "")
    for section, registry, key in (("method", METHODS, "name"), ("task", HEADS, "head")):
        rows.append((f"{section}.{key}", _shown(getattr((MethodConfig if section == "method" else HeadConfig)(), key)),
                     f"{'method' if section == 'method' else 'task head'}: one of {', '.join(registry.names())}"))
        shared: dict[tuple[str, str, str], list[str]] = {}
        for plugin_name, plugin in registry:
            for name, field in plugin.config_cls.model_fields.items():
                if name != key:
                    row = (name, _shown(field.get_default(call_default_factory=True)), field.description or "")
                    shared.setdefault(row, []).append(plugin_name)
        for (name, default, help_text), owners in shared.items():
            rows.append((f"{section}.{name} ({key}: {', '.join(owners)})", default, help_text))
    return rows
