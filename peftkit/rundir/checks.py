"""The files loading a saved run reads, checked before they are read: a damaged one is one error line naming it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from peft import PeftConfig

from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError, first_line
from peftkit.heads.base import Head
from peftkit.methods.base import Method, PeftMethod
from peftkit.registry import plugins
from peftkit.rundir.layout import RECIPE_FILE, TOKENIZER_FILES
from peftkit.rundir.readback import check_weights, damaged, labels_mismatch, read_json_object


def head_outputs(head: Head, labels: list[str]) -> int | None:
    """How many outputs the head's model has for ``labels`` (None: the head does not say)."""
    outputs = head.model_kwargs(labels).get("num_labels")
    return outputs if isinstance(outputs, int) else None


def _check_saved_config(directory: Path, recipe: Recipe, head: Head, method: Method) -> None:
    """The method's saved config: an adapter of the recipe's peft type that peft reads, or a model config whose
    label count is the recipe's."""
    name = method.saved_config
    if not (directory / name).is_file():
        raise damaged(directory, name, "is missing")
    config = read_json_object(directory, name)
    if isinstance(method, PeftMethod):
        expected = method.tuner.upper()
        if config.get("peft_type") != expected:
            raise PeftkitError(
                f"run '{directory}': {name} holds peft_type {config.get('peft_type')!r} but {RECIPE_FILE} says method "
                f"{method.name} (peft_type '{expected}'); put back the recipe.yaml the run was trained with, or "
                f"restore {name}"
            )
        try:
            peft_config = PeftConfig.from_pretrained(str(directory))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise damaged(directory, name, f"holds settings peft refuses ({first_line(exc)})") from None
        _check_setting_kinds(directory, name, peft_config)
        return
    saved, outputs = config.get("id2label"), head_outputs(head, recipe.task.labels)
    if isinstance(saved, dict) and recipe.task.labels and outputs is not None and len(saved) != outputs:
        raise labels_mismatch(directory, len(recipe.task.labels), len(saved), method.saved_weights or name)


#: Settings annotated as one plain type (peft's annotations are text) → the JSON kinds allowed and their name.
_PLAIN_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int, float), "a number"), "float": ((int, float), "a number"), "bool": ((bool,), "true/false"),
    "str": ((str,), "text"),
}


def _check_setting_kinds(directory: Path, name: str, config: PeftConfig) -> None:
    """Each setting annotated as a plain number, text or true/false holds one (or null): peft reads the file
    without checking, and fails later with a traceback."""
    for field in fields(config):
        annotation = str(field.type).removeprefix("Optional[").removesuffix("]").removesuffix(" | None")
        value = getattr(config, field.name)
        if annotation not in _PLAIN_KINDS or value is None:
            continue
        kinds, expected = _PLAIN_KINDS[annotation]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise damaged(directory, name, f"holds {field.name}: {value!r:.40}, expected {expected}")


def check_run_files(directory: str | Path, recipe: Recipe) -> None:
    """Every file loading the run reads, checked before it is: the tokenizer's JSON files, the method's saved
    config and weights (present, readable, fitting the recipe's labels); a damaged one is one error line."""
    directory = Path(directory)
    head, method = plugins(recipe)
    for name in TOKENIZER_FILES:
        if (directory / name).is_file():
            read_json_object(directory, name)
    if method.saved_config:
        _check_saved_config(directory, recipe, head, method)
    if method.saved_weights:
        check_weights(directory, method.saved_weights)
