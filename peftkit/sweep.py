"""`peftkit sweep`: an Optuna search over any recipe keys, with pruning; the best recipe written out as YAML.

The search space is a YAML mapping of dotted recipe keys to a range or a list of choices::

    train.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}
    method.r: [4, 8, 16]
    train.warmup: {low: 0.0, high: 0.2}
    train.batch_size: {low: 8, high: 32, step: 8}   # whole numbers: an integer range
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from peftkit.config.files import read_yaml, resolve_recipe_path
from peftkit.config.load import load_recipe, recipe_from_dict
from peftkit.config.overrides import apply_overrides
from peftkit.data.loading import own_validation_split
from peftkit.errors import PeftkitError
from peftkit.registry import HEADS
from peftkit.rundir import ownership
from peftkit.rundir.destination import check_destination, run_inputs
from peftkit.rundir.layout import BEST_RECIPE, TRIAL_PREFIX, TRIALS_TABLE
from peftkit.training.build import build_trainer

PRUNERS = ("median", "hyperband", "none")


@dataclass
class SweepResult:
    """Where the sweep wrote its table and best recipe, and what the best trial reached."""

    output_dir: Path
    best_recipe: Path
    best_value: float
    best_params: dict[str, Any]
    metric: str
    rows: list[dict[str, Any]]


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise PeftkitError("peftkit sweep needs Optuna: pip install 'peftkit[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def read_space(path: str | Path) -> dict[str, Any]:
    """The search space file: dotted key → {low, high[, log, step]} or a list of choices."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "does not exist"
        raise PeftkitError(f"--space '{path}' {what}")
    space = read_yaml(path)
    if not space:
        raise PeftkitError(f"{path}: the search space is empty; map recipe keys to ranges or choices")
    for key, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                raise PeftkitError(f"{path}: '{key}': the list of choices is empty")
            continue
        if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log", "step"}:
            raise PeftkitError(
                f"{path}: '{key}' must be a list of choices or {{low, high}} with optional log / step, got {spec!r}"
            )
        if not all(isinstance(spec[k], (int, float)) and not isinstance(spec[k], bool) for k in ("low", "high")):
            raise PeftkitError(f"{path}: '{key}': low and high must be numbers, got {spec['low']!r}, {spec['high']!r}")
        if spec["low"] > spec["high"]:
            raise PeftkitError(f"{path}: '{key}': low {spec['low']} is above high {spec['high']}")
        if not isinstance(spec.get("log", False), bool):
            raise PeftkitError(f"{path}: '{key}': log must be true or false, got {spec['log']!r}")
    return space


def suggest(trial: Any, key: str, spec: Any) -> Any:
    """One value for ``key`` from the trial: a choice, an integer range or a float range."""
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    log = spec.get("log", False)
    if all(isinstance(spec.get(k, 1), int) for k in ("low", "high", "step")):
        return trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=log)
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=spec.get("step"), log=log)


def _check_space(recipe: str | Path, overrides: dict[str, Any], space: dict[str, Any]) -> None:
    """Every key and every end of every range must make a valid recipe, so no trial fails on a typo."""
    for key, spec in space.items():
        for value in spec if isinstance(spec, list) else (spec["low"], spec["high"]):
            try:
                load_recipe(recipe, {**overrides, key: value})
            except PeftkitError as exc:
                raise PeftkitError(f"search space '{key}' = {value!r}: {exc}") from None


class PruningCallback(TrainerCallback):
    """Reports each validation score to the Optuna trial and stops training when the pruner says so."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.pruned = False

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None:
            return
        self.trial.report(float(value), state.global_step)
        if self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


def _pruner(optuna: Any, pruner: Any) -> Any:
    if not isinstance(pruner, str):
        return pruner
    if pruner not in PRUNERS:
        raise PeftkitError(f"--pruner '{pruner}': expected one of {', '.join(PRUNERS)}")
    return {"median": optuna.pruners.MedianPruner(n_startup_trials=2),
            "hyperband": optuna.pruners.HyperbandPruner(),
            "none": optuna.pruners.NopPruner()}[pruner]


def sweep(recipe: str | Path, space: str | Path, trials: int, output_dir: str | Path | None = None,
          overrides: dict[str, Any] | None = None, pruner: Any = "median", seed: int = 0,
          overwrite: bool = False) -> SweepResult:
    """Search ``space`` for ``trials`` trials, each a short training scored on the validation split.

    Writes ``trials.csv`` (one row per trial) and ``best.yaml`` (the recipe with the best values) to
    ``output_dir``; ``peftkit train best.yaml`` trains it.
    """
    optuna = _optuna()
    if trials < 1:
        raise PeftkitError(f"--trials must be at least 1, got {trials}")
    overrides = dict(overrides or {})
    recipe_path = resolve_recipe_path(recipe)
    search = read_space(space)
    _check_space(recipe, overrides, search)
    base = load_recipe(recipe, overrides)
    if own_validation_split(base.data) is False:
        raise PeftkitError(f"sweep: recipe '{recipe}' has no validation split (data.validation_size is 0 and its data "
                           "has none of its own), so trials would be scored on the test split; set "
                           "data.validation_size")
    out = Path(output_dir or Path("runs") / "sweeps" / recipe_path.stem)
    with _prepare(out, overwrite, [recipe_path, space, *run_inputs(base)]):  # locked until the sweep ends
        metric = base.train.metric_for_best_model or HEADS.get(base.task.head).main_metric

        def objective(trial: Any) -> float:
            params = {key: suggest(trial, key, spec) for key, spec in search.items()}
            trial_recipe = load_recipe(recipe, {**overrides, **params})
            trial_dir = out / f"{TRIAL_PREFIX}{trial.number:03d}"
            if os.path.lexists(trial_dir):
                raise PeftkitError(f"--output-dir '{out}': '{trial_dir.name}' appeared there, not written by this "
                                   "sweep; it is kept — move it away or choose another --output-dir")
            ownership.record(out, "sweep", [trial_dir.name])
            trial_recipe.output_dir = str(trial_dir)
            prepared = build_trainer(trial_recipe, trial_dir)
            callback = PruningCallback(trial, metric)
            prepared.trainer.add_callback(callback)
            try:
                prepared.trainer.train()
                if callback.pruned:
                    raise optuna.TrialPruned()
                scores = prepared.trainer.evaluate()
            finally:
                shutil.rmtree(trial_dir, ignore_errors=True)
            if f"eval_{metric}" not in scores:
                raise PeftkitError(f"sweep: validation metric '{metric}' not reported; it has {', '.join(scores)}")
            print(f"trial {trial.number}: {metric} {scores[f'eval_{metric}']:.4f}  {params}", flush=True)
            return float(scores[f"eval_{metric}"])

        study = optuna.create_study(direction="minimize" if "loss" in metric else "maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed), pruner=_pruner(optuna, pruner))
        study.optimize(objective, n_trials=trials, catch=())
        rows = [{"trial": t.number, "state": t.state.name.lower(), metric: t.value, **t.params} for t in study.trials]
        _write_table(out / TRIALS_TABLE, rows)
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not finished:
            raise PeftkitError(f"sweep: no trial finished (all {len(rows)} pruned); see {out / TRIALS_TABLE}")
        best = study.best_trial
        best_path = write_best_recipe(recipe_path, {**overrides, **best.params}, out)
        return SweepResult(out, best_path, float(best.value), dict(best.params), metric, rows)


def _prepare(out: Path, overwrite: bool, inputs: list[str | Path]) -> ownership.DirectoryLock:
    """An empty sweep directory, locked for the sweep; ``overwrite`` removes what an earlier sweep wrote (its
    manifest), nothing else, and refuses when a file left there has a name the sweep writes."""
    check_destination(out, overwrite, "sweep", "--output-dir", inputs, locked=True)
    out.mkdir(parents=True, exist_ok=True)
    lock = ownership.DirectoryLock(out, "--output-dir").acquire()
    try:
        replace = ownership.has_content(out)  # checked again under the lock: another sweep may have won
        if replace and not overwrite:
            raise PeftkitError(f"--output-dir '{out}' is not empty (another sweep wrote it meanwhile); choose "
                               "another (--output-dir) or pass --overwrite")
        if replace:
            ownership.check_not_precious(out, "--output-dir", inputs)
            ownership.check_owned(out, "sweep", "--output-dir")
        clash = [name for name in ownership.foreign_entries(out)
                 if name in (TRIALS_TABLE, BEST_RECIPE) or name.startswith(TRIAL_PREFIX)]
        if clash:
            raise PeftkitError(f"--output-dir '{out}' holds {', '.join(clash)}, which peftkit did not write and the "
                               "sweep would replace; move it away or choose another --output-dir")
        if replace:
            ownership.remove_owned(out, "sweep", "--output-dir")
        ownership.record(out, "sweep", [TRIALS_TABLE, BEST_RECIPE])
    except BaseException:
        lock.release()
        raise
    return lock


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_best_recipe(recipe_path: Path, values: dict[str, Any], out: Path) -> Path:
    """The original recipe with the best values set (and its own output_dir), checked to load."""
    raw = apply_overrides(read_yaml(recipe_path), values)
    raw["output_dir"] = str(out / "best-run")
    description = raw.get("description", "")
    raw["description"] = f"{description} (sweep best)".strip()
    recipe_from_dict(raw, source=str(out / BEST_RECIPE))
    path = out / BEST_RECIPE
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    """The trials as an aligned text table."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
