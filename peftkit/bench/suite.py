"""Suite files: a base recipe, named variants and a grid; expanded into cells (one training run each)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from peftkit.config.files import read_yaml, resolve_recipe_path
from peftkit.config.overrides import apply_overrides
from peftkit.config.schema import Section, option
from peftkit.errors import PeftkitError

GridAxis = list[Any] | dict[str, Any]


class QuickSection(Section):
    overrides: dict[str, Any] = option({}, "dotted overrides applied on top of the suite's for --quick")
    variants: list[str] = option([], "run only these variants with --quick; empty = all")
    grid: dict[str, GridAxis] = option({}, "grid axes that replace the suite's with --quick")


class Suite(Section):
    name: str = option("", "suite name: the default output directory is runs/bench-<name>")
    description: str = option("", "one line shown in reports")
    kind: Literal["accuracy", "scaling"] = option(
        "accuracy", "accuracy: test metrics against memory; scaling: memory and speed against model size"
    )
    recipe: str | dict[str, Any] = option("sentiment-lora", "base recipe: a name, a YAML file or the recipe itself")
    overrides: dict[str, Any] = option({}, "dotted overrides applied to the base recipe in every cell")
    variants: dict[str, dict[str, Any]] = option(
        {}, "variant name → dotted overrides (method, quantization, lr …); each variant runs every grid point"
    )
    grid: dict[str, GridAxis] = option(
        {}, "dotted key → list of values (or name → value); every combination runs, e.g. train.seed: [1, 2, 3]"
    )
    reference: str | None = option(None, "variant shown as the reference row (e.g. the seeds' recipe)")
    baselines: list[Literal["tfidf"]] = option(
        [], "classical rows run beside the variants at every grid point (also with --quick): tfidf = TF-IDF + "
        "logistic regression on the same split (single-label sequence classification heads)"
    )
    metric: str | None = option(None, "main test metric of the report; empty = accuracy, else f1")
    cell_timeout: float | None = option(None, "seconds a cell may run before it is stopped and recorded failed", gt=0)
    quick: QuickSection = option(QuickSection(), "the smoke-size suite run by --quick (CI)")


@dataclass(frozen=True)
class Cell:
    """One grid point: a variant and one value per grid axis, with the recipe it resolves to."""

    id: str
    variant: str
    values: dict[str, Any]
    labels: dict[str, str]
    recipe: dict[str, Any]
    baseline: str | None = None  # a classical row (suite.baselines) instead of a training run


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; problems are one-line errors naming the file and key."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "does not exist"
        raise PeftkitError(f"suite file '{path}' {what}")
    raw = read_yaml(path)
    raw.setdefault("name", path.stem)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise PeftkitError(f"{path}: '{where}': {error['msg'].lower()}") from None
    if not suite.variants:
        raise PeftkitError(f"{path}: 'variants' is empty; name at least one (e.g. lora: {{method: {{name: lora}}}})")
    if isinstance(suite.recipe, str) and not isinstance(raw.get("recipe"), dict):
        candidate = path.parent / suite.recipe
        suite.recipe = str(candidate) if candidate.is_file() else suite.recipe
    clash = set(suite.baselines) & set(suite.variants)
    if clash:
        raise PeftkitError(f"{path}: variant '{clash.pop()}' has the name of a baseline; rename it")
    for name in [*suite.quick.variants, *([suite.reference] if suite.reference else [])]:
        if name not in suite.variants:
            raise PeftkitError(f"{path}: variant '{name}' is not one of the suite's ({', '.join(suite.variants)})")
    return suite


def _axis_items(key: str, axis: GridAxis) -> list[tuple[str, Any]]:
    """(label, value) pairs of one axis: names given as a mapping, else `seed1`-style from the key's last part."""
    if isinstance(axis, dict):
        return [(str(name), value) for name, value in axis.items()]
    short = key.split(".")[-1]
    return [(f"{short}{value}", value) for value in axis]


def base_recipe(suite: Suite) -> dict[str, Any]:
    """The suite's base recipe as a raw mapping, before overrides."""
    if isinstance(suite.recipe, dict):
        return dict(suite.recipe)
    return read_yaml(resolve_recipe_path(suite.recipe))


def expand(suite: Suite, quick: bool = False) -> list[Cell]:
    """Every cell of the suite (or of its quick version); recipes are validated when each cell runs, so
    one bad cell (say, a method not installed here) is recorded as failed instead of stopping the suite."""
    variants = {k: v for k, v in suite.variants.items() if not quick or not suite.quick.variants
                or k in suite.quick.variants}
    grid = {**suite.grid, **suite.quick.grid} if quick else dict(suite.grid)
    overrides = {**suite.overrides, **(suite.quick.overrides if quick else {})}
    base = base_recipe(suite)
    axes = [[(key, label, value) for label, value in _axis_items(key, axis)] for key, axis in grid.items()]
    cells = []
    for point in itertools.product(*axes):  # grid point by grid point: early cells already compare every variant
        for variant, variant_overrides in variants.items():
            values = {key: value for key, _, value in point}
            raw = apply_overrides(base, variant_overrides)
            raw = apply_overrides(raw, {**overrides, **values})
            cell_id = "-".join([variant, *(label for _, label, _ in point)])
            cells.append(Cell(cell_id, variant, values, {key: label for key, label, _ in point}, raw))
        for baseline in suite.baselines:
            values = {key: value for key, _, value in point}
            raw = apply_overrides(base, {**overrides, **values})
            cell_id = "-".join([baseline, *(label for _, label, _ in point)])
            cells.append(Cell(cell_id, baseline, values, {key: label for key, label, _ in point}, raw, baseline))
    return cells
