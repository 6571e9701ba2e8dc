"""`peftkit sweep`: Optuna trials over recipe keys, pruning, results table, a best recipe that trains."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from peftkit.cli import main
from peftkit.config.load import load_recipe
from peftkit.errors import PeftkitError
from peftkit.sweep import read_space, sweep

optuna = pytest.importorskip("optuna")

FAST = {"train.max_steps": 6, "train.eval_strategy": "steps", "train.eval_steps": 3, "data.validation_size": 24,
        "data.test_size": 24}


def _space(tmp_path: Path, space: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    return path


def test_sweep_writes_table_and_a_best_recipe_that_trains(write_recipe, tmp_path: Path, capsys) -> None:
    recipe = write_recipe(FAST)
    space = _space(tmp_path, {"method.r": [2, 4], "train.learning_rate": {"low": 1e-3, "high": 5e-3, "log": True}})
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", "2", "--output-dir", str(out),
                 "--pruner", "none"]) == 0
    printed = capsys.readouterr().out
    with (out / "trials.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["complete", "complete"]
    assert {r["method.r"] for r in rows} <= {"2", "4"}
    assert all(1e-3 <= float(r["train.learning_rate"]) <= 5e-3 for r in rows)
    best_row = max(rows, key=lambda r: float(r["accuracy"]))
    best = load_recipe(out / "best.yaml")
    assert best.method.r == int(best_row["method.r"])
    assert best.train.learning_rate == pytest.approx(float(best_row["train.learning_rate"]))
    assert best.train.max_steps == 6 and best.output_dir == str(out / "best-run")
    assert "best accuracy" in printed and "trial" in printed
    assert not list(out.glob("trial-*"))  # trial checkpoints cleaned up
    assert main(["train", str(out / "best.yaml"), "train.max_steps=2"]) == 0
    assert (out / "best-run" / "recipe.yaml").is_file()


def test_pruned_trials_stop_early_and_are_reported(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(FAST)
    space = _space(tmp_path, {"train.warmup": {"low": 0, "high": 2}})
    prune_all = optuna.pruners.ThresholdPruner(upper=-1.0)  # any reported accuracy is "too high": pruned
    with pytest.raises(PeftkitError, match=r"sweep: no trial finished \(all 2 pruned\)"):
        sweep(recipe, space, trials=2, output_dir=tmp_path / "s", pruner=prune_all)
    with (tmp_path / "s" / "trials.csv").open(encoding="utf-8") as f:
        assert [r["state"] for r in csv.DictReader(f)] == ["pruned", "pruned"]


def test_bad_search_spaces_are_named(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(FAST)
    with pytest.raises(PeftkitError, match=r"'method.r' must be a list of choices or \{low, high\}"):
        read_space(_space(tmp_path, {"method.r": "8"}))
    with pytest.raises(PeftkitError, match=r"'train.warmup': low 0.5 is above high 0.1"):
        read_space(_space(tmp_path, {"train.warmup": {"low": 0.5, "high": 0.1}}))
    with pytest.raises(PeftkitError, match=r"'train.warmup': log must be true or false, got 'no'"):
        read_space(_space(tmp_path, {"train.warmup": {"low": 0.1, "high": 0.5, "log": "no"}}))
    with pytest.raises(PeftkitError, match=r"search space 'train.learnig_rate' = 0.001: .*unknown key "
                                           r"'train.learnig_rate'; did you mean 'train.learning_rate'"):
        sweep(recipe, _space(tmp_path, {"train.learnig_rate": [0.001]}), trials=1, output_dir=tmp_path / "x")
    with pytest.raises(PeftkitError, match=r"search space 'method.r' = 0: .*'method.r'"):
        sweep(recipe, _space(tmp_path, {"method.r": [0, 4]}), trials=1, output_dir=tmp_path / "x")
    assert main(["sweep", str(recipe), "--space", str(tmp_path / "none.yaml")]) == 2


def test_a_recipe_without_a_validation_split_is_refused_before_any_trial(write_recipe, tmp_path: Path,
                                                                        capsys) -> None:
    """With data.validation_size 0 the test split stands in for validation: a sweep must never choose on it."""
    recipe = write_recipe({**FAST, "data.validation_size": 0})
    space = _space(tmp_path, {"method.r": [2, 4]})
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--space", str(space), "--trials", "2", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no validation split" in err and "data.validation_size" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
