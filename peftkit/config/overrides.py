"""Dotted overrides (`train.epochs=2`) and the shorthand forms of a raw recipe (`method: lora`)."""

from __future__ import annotations

import copy
from typing import Any

from peftkit.config.files import named_recipes, parse_yaml
from peftkit.config.schema import MethodConfig
from peftkit.errors import PeftkitError
from peftkit.registry import METHODS


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=2` → ("train.epochs", 2); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise PeftkitError(f"override '{text}' must look like section.key=value (e.g. train.epochs=2)")
    try:
        value = parse_yaml(raw, "override") if raw.strip() else None
    except PeftkitError:  # not YAML (or an alias bomb): the text itself, which validation then judges
        value = raw
    return key.strip(), value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted keys set; unknown keys are caught later by validation."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise PeftkitError(f"override '{dotted}': '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return result


def shorthand(value: Any, key: str) -> Any:
    """`method: lora`, `task: ner`, `quantization: 4bit` stand for `{key: value}`."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return {key: str(value)}
    return value


def check_method_switch(raw: dict[str, Any], overrides: dict[str, Any], source: str, stem: str) -> None:
    """``method.name=X`` on a recipe written for another method: name every option X does not take, say that
    they come from the recipe, and how to switch (replace the whole section, or a recipe for X)."""
    new = overrides.get("method.name")
    method_raw = shorthand(raw.get("method"), "name")
    if new is None or "method" in overrides or not isinstance(method_raw, dict) or str(new) not in METHODS:
        return
    old = str(method_raw.get("name", MethodConfig().name))
    fields = METHODS.get(str(new)).config_cls.model_fields
    foreign = [f"method.{key}" for key in method_raw if key not in fields and f"method.{key}" not in overrides]
    if old == str(new) or not foreign:
        return
    hint = f"pass method={{name: {new}}} to replace the whole section"
    sibling = stem.removesuffix(f"-{old}") + f"-{new}"
    if stem.endswith(f"-{old}") and sibling in named_recipes():
        hint += f", or use the recipe '{sibling}'"
    raise PeftkitError(
        f"{source}: method.name={new}: the recipe's {old} options {', '.join(foreign)} do not apply to "
        f"method '{new}'; {hint}"
    )
