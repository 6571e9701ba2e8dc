"""A raw mapping or a recipe file → a validated Recipe; pydantic's errors become one line naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from peftkit.config.files import read_yaml, recipe_dirs, resolve_recipe_path
from peftkit.config.overrides import apply_overrides, check_method_switch, parse_override, shorthand
from peftkit.config.schema import RULE, HeadConfig, MethodConfig, Section
from peftkit.config.sections import SECTIONS, Recipe
from peftkit.config.validation import check_combinations
from peftkit.errors import PeftkitError, did_you_mean
from peftkit.registry import HEADS, METHODS

#: pydantic tags a member of a union (``int | float``) in an error's location; not a key the user wrote.
_UNION_TAGS = {"int", "float", "str", "bool", "none"}


def _key_path(error: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(p) for p in error["loc"] if p != "[key]" and not (
        isinstance(p, str) and (p in _UNION_TAGS or "[" in p or p.startswith("literal"))))


def _describe_error(error: dict[str, Any], prefix: tuple[str, ...], fields: list[str]) -> str:
    loc = prefix + _key_path(error)
    path = ".".join(loc)
    kind = error["type"]
    if kind == RULE:
        return error["msg"]
    if kind == "extra_forbidden":
        return f"unknown key '{path}'{did_you_mean(loc[-1], fields, prefix='.'.join(loc[:-1]) + '.')}"
    if kind == "missing":
        return f"'{path}' is required"
    got = error.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"'{path}': {error['msg'].lower()} (got {shown})"


def _wanted(error: dict[str, Any]) -> list[str]:
    """What one member of a union accepts, from its error: ``'auto'``, ``a valid integer``, ``true``, ``false``."""
    if error["type"].startswith("bool_"):
        return ["true", "false"]
    return [error["msg"].split(",")[0].removeprefix("Input should be ")]


def _union_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """One error for a value every member of a union refused (``bool | Literal["auto"]``): what each accepts."""
    wanted = list(dict.fromkeys(w for e in errors for w in _wanted(e)))
    listed = ", ".join(wanted[:-1]) + f" or {wanted[-1]}" if len(wanted) > 1 else wanted[0]
    return {**errors[0], "type": "union", "msg": f"Input should be {listed}"}


def _validate(cls: type[Section], data: Any, prefix: tuple[str, ...], source: str) -> Section:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        path = ".".join(prefix)
        raise PeftkitError(f"{source}: '{path}' must be a mapping of options, got {data!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        same = [e for e in errors if _key_path(e) == _key_path(errors[0])]  # one key failing each union member
        first = next((e for e in same if e["type"] == "finite_number"), None)
        first = first or (_union_error(same) if len(same) > 1 else errors[0])
        errors = [first, *(e for e in errors if e not in same)]
        owner = cls
        for part in first["loc"][:-1]:  # suggest keys of the section the bad key sits in
            field = owner.model_fields.get(str(part))
            annotation = getattr(field, "annotation", None)
            if isinstance(annotation, type) and issubclass(annotation, Section):
                owner = annotation
        message = _describe_error(first, prefix, list(owner.model_fields))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise PeftkitError(f"{source}: {message}{more}") from None


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe", check_data: bool = True) -> Recipe:
    """Validate a raw mapping into a Recipe; the first problem becomes a one-line PeftkitError.

    ``check_data=False`` skips checking that the data files exist (a saved run used for prediction).
    """
    raw = dict(raw)
    allowed = list(Recipe.model_fields)
    for key in raw:
        if key not in allowed:
            raise PeftkitError(f"{source}: unknown section '{key}'{did_you_mean(str(key), allowed)}")
    method_raw = shorthand(raw.pop("method", None), "name") or {}
    task_raw = shorthand(raw.pop("task", None), "head") or {}
    if "quantization" in raw:
        raw["quantization"] = shorthand(raw["quantization"], "mode")
    if isinstance(raw.get("preprocess"), list):
        raw["preprocess"] = {"steps": raw["preprocess"]}
    for name in ("method", "task"):
        value = method_raw if name == "method" else task_raw
        if not isinstance(value, dict):
            raise PeftkitError(f"{source}: '{name}' must be a mapping of options, got {value!r}")
    method_name = str(method_raw.get("name", MethodConfig().name))
    head_name = str(task_raw.get("head", HeadConfig().head))
    try:
        method = METHODS.get(method_name)
        head = HEADS.get(head_name)
    except PeftkitError as exc:
        key = "method.name" if method_name not in METHODS else "task.head"
        raise PeftkitError(f"{source}: '{key}': {exc}") from None
    sections = {name: _validate(cls, raw.get(name), (name,), source) for name, cls in SECTIONS.items()}
    sections["method"] = _validate(method.config_cls, method_raw, ("method",), source)
    sections["task"] = _validate(head.config_cls, task_raw, ("task",), source)
    top = {k: v for k, v in raw.items() if k not in SECTIONS}
    recipe = _validate(Recipe, {**top, **sections}, (), source)
    check_combinations(recipe, source, check_data)
    if recipe.train.learning_rate is None:
        try:  # assigning re-checks the section (train.scheduler_options.lr_end against the rate)
            recipe.train.learning_rate = method.default_learning_rate
        except ValidationError as exc:
            raise PeftkitError(f"{source}: {_describe_error(exc.errors()[0], ('train',), [])}") from None
    return recipe


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> Recipe:
    """Load a named recipe or a YAML file, apply dotted overrides, validate, fill in defaults."""
    path = resolve_recipe_path(name_or_path)
    raw = read_yaml(path)
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    source = str(path) if path.parent not in recipe_dirs() else path.stem
    check_method_switch(raw, overrides or {}, source, path.stem)
    raw = apply_overrides(raw, overrides or {})
    recipe = recipe_from_dict(raw, source=source)
    if recipe.output_dir is None:
        recipe.output_dir = str(Path("runs") / path.stem)
    return recipe
