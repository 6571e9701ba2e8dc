"""Suite files: a base recipe, named variants and a grid; expanded into cells (one training run each)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from peftkit.config.files import read_yaml, resolve_recipe_path
from peftkit.config.overrides import apply_overrides
from peftkit.config.schema import Section, option
from peftkit.errors import PeftkitError

GridAxis = list[Any] | dict[str, Any]
SEED_KEY = "train.seed"
#: With --quick a search tries only the first values of each variant's list (the code path runs in CI).
QUICK_TRIALS = 2
#: Short names of searched keys in cell names.
SHORT_KEYS = {"train.learning_rate": "lr"}
CELL_NAME = re.compile(r"[\w.+-]+")


class QuickSection(Section):
    overrides: dict[str, Any] = option({}, "dotted overrides applied on top of the suite's for --quick")
    variants: list[str] = option([], "run only these variants with --quick; empty = all")
    grid: dict[str, GridAxis] = option({}, "grid axes that replace the suite's with --quick")


class SearchSection(Section):
    key: str = option("train.learning_rate", "the dotted recipe key the search chooses, per variant")
    values: list[Any] = option([], "values tried for every variant (a variant's own `search:` list replaces them: "
                                   "same number of values for every variant)")
    seed: int = option(0, "train.seed of every search trial", ge=0)
    metric: str | None = option(None, "validation metric that chooses; empty = train.metric_for_best_model, else "
                                      "the head's main metric (a metric named *loss* is minimised)")


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
    search: SearchSection | None = option(
        None, "per variant: one trial per value on the validation split, then the grid at the best value"
    )
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
    search: dict[str, Any] | None = None  # a search trial, or the search a grid cell's value came from


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
    _check_search(path, suite)
    return suite


def _check_search(path: Path, suite: Suite) -> None:
    """A search tries the same number of values for every variant, over a grid of seeds only."""
    search = suite.search
    own = {name: v["search"] for name, v in suite.variants.items() if "search" in v}
    if search is None:
        if own:
            raise PeftkitError(f"{path}: 'variants.{next(iter(own))}.search': the suite has no 'search' section "
                               "(search: {key: train.learning_rate, values: [...]})")
        return
    if not search.values:
        raise PeftkitError(f"{path}: 'search.values' is empty; list the values every variant tries")
    if search.key == SEED_KEY or search.key in suite.grid:
        raise PeftkitError(f"{path}: 'search.key' '{search.key}' is a grid axis; search another key")
    other = [key for key in suite.grid if key != SEED_KEY]
    if other:
        raise PeftkitError(f"{path}: 'grid.{other[0]}': a suite with a 'search' may only vary {SEED_KEY} in its grid")
    for name, values in own.items():
        if not isinstance(values, list) or len(values) != len(search.values):
            given = f"{len(values)} values" if isinstance(values, list) else repr(values)
            raise PeftkitError(f"{path}: 'variants.{name}.search': {given}, expected a list of {len(search.values)} "
                               "(as many as search.values: every variant gets the same number of trials)")
    for where, values in [("search.values", search.values), *((f"variants.{n}.search", v) for n, v in own.items())]:
        for value in values:
            if not isinstance(value, (int, float, str)) or not CELL_NAME.fullmatch(value_label(search.key, value)):
                raise PeftkitError(f"{path}: '{where}': {value!r} cannot name a trial cell; give numbers or words")
        if len(set(values)) < len(values):
            raise PeftkitError(f"{path}: '{where}': {values} lists a value twice")
    for name, variant in suite.variants.items():
        if search.key in variant:
            raise PeftkitError(f"{path}: 'variants.{name}.{search.key}': the search chooses {search.key}; list the "
                               f"values to try as variants.{name}.search instead")


def search_values(suite: Suite, variant: str, quick: bool = False) -> list[Any]:
    """The values a variant's search tries: its own list, else the suite's; the first QUICK_TRIALS with --quick."""
    assert suite.search is not None
    values = list(suite.variants[variant].get("search", suite.search.values))
    return values[:QUICK_TRIALS] if quick else values


def variant_overrides(suite: Suite, variant: str) -> dict[str, Any]:
    """A variant's recipe overrides (its `search` list is not one)."""
    return {key: value for key, value in suite.variants[variant].items() if key != "search"}


def short_value(value: Any) -> str:
    """A value as it reads best: ``2e-3`` rather than ``0.002`` (any float below 0.1), ``0.1``, ``8``."""
    if isinstance(value, float) and 0 < abs(value) < 0.1:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value)


def value_label(key: str, value: Any) -> str:
    """A readable cell-name part for a searched value: ``lr2e-3``, ``r8``."""
    return f"{SHORT_KEYS.get(key, key.split('.')[-1])}{short_value(value)}"


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


def _variants(suite: Suite, quick: bool) -> list[str]:
    return [k for k in suite.variants if not quick or not suite.quick.variants or k in suite.quick.variants]


def _overrides(suite: Suite, quick: bool) -> dict[str, Any]:
    return {**suite.overrides, **(suite.quick.overrides if quick else {})}


def expand(suite: Suite, quick: bool = False, chosen: dict[str, dict[str, Any]] | None = None) -> list[Cell]:
    """Every cell of the suite (or of its quick version); recipes are validated when each cell runs, so
    one bad cell (say, a method not installed here) is recorded as failed instead of stopping the suite.
    ``chosen``: variant → what its search chose (``{"key", "value", ...}``, see :func:`trial_cells`); the
    variant's cells train at that value and record the search."""
    chosen = chosen or {}
    grid = {**suite.grid, **suite.quick.grid} if quick else dict(suite.grid)
    overrides = _overrides(suite, quick)
    base = base_recipe(suite)
    axes = [[(key, label, value) for label, value in _axis_items(key, axis)] for key, axis in grid.items()]
    cells = []
    for point in itertools.product(*axes):  # grid point by grid point: early cells already compare every variant
        for variant in _variants(suite, quick):
            values = {key: value for key, _, value in point}
            search = chosen.get(variant)
            if search is not None and search.get("value") is not None:
                values[search["key"]] = search["value"]
            raw = apply_overrides(base, variant_overrides(suite, variant))
            raw = apply_overrides(raw, {**overrides, **values})
            cell_id = "-".join([variant, *(label for _, label, _ in point)])
            cells.append(Cell(cell_id, variant, values, {key: label for key, label, _ in point}, raw, search=search))
        for baseline in suite.baselines:
            values = {key: value for key, _, value in point}
            raw = apply_overrides(base, {**overrides, **values})
            cell_id = "-".join([baseline, *(label for _, label, _ in point)])
            cells.append(Cell(cell_id, baseline, values, {key: label for key, label, _ in point}, raw, baseline))
    return cells


def trial_cells(suite: Suite, quick: bool = False) -> list[Cell]:
    """One search trial per variant and value (none without `search`): the recipe at the search seed, named
    ``<variant>-<value>-search``; it is scored on the validation split only."""
    if suite.search is None:
        return []
    search = suite.search
    base = base_recipe(suite)
    overrides = _overrides(suite, quick)
    cells = []
    for variant in _variants(suite, quick):
        for index, value in enumerate(search_values(suite, variant, quick)):
            values = {search.key: value, SEED_KEY: search.seed}
            raw = apply_overrides(apply_overrides(base, variant_overrides(suite, variant)), {**overrides, **values})
            label = value_label(search.key, value)
            cells.append(Cell(f"{variant}-{label}-search", variant, values, {search.key: label}, raw,
                              search={"role": "trial", "key": search.key, "value": value, "index": index,
                                      "seed": search.seed, "metric": search.metric}))
    return cells
