"""Building blocks for recipe sections: every option is declared once, with its default and help."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

#: The error type of a broken rule about one section; the recipe loader prints its message as it is.
RULE = "peftkit_rule"


class Section(BaseModel):
    """A recipe section: unknown keys are refused, values are checked on assignment too, numbers are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


def option(default: Any, help: str, **constraints: Any) -> Any:
    """Declare one recipe option: its default, its help text (shown by the CLI and the docs) and bounds."""
    if isinstance(default, (list, dict)):
        value = default
        return Field(default_factory=lambda: type(value)(value), description=help, **constraints)
    return Field(default, description=help, **constraints)


def refuse(message: str) -> PydanticCustomError:
    """What a section's validator raises for a rule about that section: ``message`` names the key in full
    (``'train.early_stopping_patience' needs …``) and says what is expected."""
    return PydanticCustomError(RULE, message)


class MethodConfig(Section):
    """Options of one fine-tuning method; a method's module subclasses this with its own fields."""

    name: str = option("lora", "fine-tuning method (`peftkit methods` lists them)")


class HeadConfig(Section):
    """Options of one task head; a head's module subclasses this with its own fields."""

    head: str = option("classification", "task head (`peftkit heads` lists them)")
    labels: list[str] = option(
        [], "label names in id order; empty = read them from the training data (sorted)"
    )

    @field_validator("labels")
    @classmethod
    def _each_label_once(cls, labels: list[str]) -> list[str]:
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise refuse(f"'task.labels': {', '.join(map(repr, twice))} given more than once; "
                         "each label name must appear once")
        return labels


def declared_options(plugin: type) -> type[Section] | None:
    """The options class a head or method class declares in its own body as the type of ``config``
    (``config: LoraOptions``), or None when it declares none there (it keeps its parent's)."""
    try:
        annotation = inspect.get_annotations(plugin, eval_str=True).get("config")
    except NameError as exc:
        raise TypeError(f"{plugin.__qualname__}: the type of `config` must be a class defined at module level "
                        f"({exc}); or set config_cls") from None
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None
