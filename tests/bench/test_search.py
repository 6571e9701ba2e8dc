"""A suite's `search`: one trial per value on the validation split, the seeds at the best value, the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import tiny_recipe

from peftkit.bench import runner
from peftkit.bench.cell import SCHEMA, failed_result
from peftkit.bench.report import render
from peftkit.bench.runner import load_results, run_suite
from peftkit.bench.suite import expand, load_suite, trial_cells
from peftkit.cli import main
from peftkit.errors import PeftkitError

SEARCH = {"key": "train.learning_rate", "values": [1.0e-5, 3.0e-3, 1.0e-2], "seed": 5}


def write_suite(path: Path, data: Path, model: Path | str = "minilm-l6", **extra: Any) -> Path:
    """Two LoRA variants (one with its own values), seeds 1 and 2, a 40-row validation split, a 3-value search."""
    recipe = tiny_recipe(model, data, {"data.test_size": 40, "data.validation_size": 40, "train.max_steps": 6,
                                       "method": {"name": "lora", "r": 4, "target_modules": ["query", "value"]}})
    suite = {"description": "search", "recipe": recipe, "search": SEARCH,
             "variants": {"lora": {}, "lora-r8": {"method.r": 8, "search": [2e-3, 4e-3, 8e-3]}},
             "grid": {"train.seed": [1, 2]}, "quick": {"variants": ["lora"], "grid": {"train.seed": [1]}}, **extra}
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def fake_run_one(scores: dict[str, tuple[float, float]], calls: list[str]) -> Any:
    """A stand-in for runner.run_one: a trial's result holds the given validation score (and a test score ranked
    the other way, which must be ignored); a seed cell's holds test accuracy 0.5 and the recipe's learning rate.
    A seed cell whose search chose nothing goes to the real run_one, which records it failed without running."""
    real = runner.run_one

    def run_one(suite: Any, cell: Any, directory: Path, timeout: Any, keep_runs: bool, *rest: Any) -> dict[str, Any]:
        if cell.search and cell.search["role"] == "chosen" and cell.search["value"] is None:
            return real(suite, cell, directory, timeout, keep_runs, *rest)
        calls.append(cell.id)
        spec = {"suite": suite.name, "cell": cell.id, "variant": cell.variant, "values": cell.values,
                "labels": cell.labels, "search": cell.search}
        if cell.id not in scores and cell.search and cell.search["role"] == "trial":
            result = failed_result(spec, "out of memory")
        else:
            validation, test = scores.get(cell.id, (None, 0.5))
            result = {**failed_result(spec, ""), "status": "ok", "error": None, "metrics": {"accuracy": test},
                      "lr": cell.recipe["train"]["learning_rate"], "method": "lora", "quantization": "none",
                      "memory": {"device": "cpu", "measure": "private", "peak_bytes": 2**20, "peak_phase": "train"},
                      "parameters": {"trainable": 10, "total": 100}}
            if cell.search and cell.search["role"] == "trial":
                result.update(validation={"accuracy": validation}, search={**cell.search, "metric": "accuracy"})
        runner.write_json_atomic(runner.result_path(directory, cell), result)
        return result

    return run_one


def test_search_expands_readable_trials_and_quick_reduces(tmp_path: Path, sentiment_csv: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", sentiment_csv))
    trials = trial_cells(suite)
    assert [c.id for c in trials] == ["lora-lr1e-5-search", "lora-lr3e-3-search", "lora-lr1e-2-search",
                                      "lora-r8-lr2e-3-search", "lora-r8-lr4e-3-search", "lora-r8-lr8e-3-search"]
    assert {c.recipe["train"]["seed"] for c in trials} == {5}
    assert trials[4].recipe["train"]["learning_rate"] == 4e-3 and trials[4].recipe["method"]["r"] == 8
    assert "search" not in trials[4].recipe  # a variant's `search` list is not a recipe override
    quick = trial_cells(suite, quick=True)
    assert [c.id for c in quick] == ["lora-lr1e-5-search", "lora-lr3e-3-search"]  # quick variants, first two values
    cells = expand(suite, chosen={"lora": {"role": "chosen", "key": "train.learning_rate", "value": 3e-3}})
    assert cells[0].id == "lora-seed1" and cells[0].values == {"train.seed": 1, "train.learning_rate": 3e-3}
    assert cells[0].recipe["train"]["learning_rate"] == 3e-3 and cells[0].labels == {"train.seed": "seed1"}


def test_search_chooses_on_validation_never_test(tmp_path: Path, sentiment_csv: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv)
    calls: list[str] = []
    scores = {"lora-lr1e-5-search": (0.60, 0.99), "lora-lr3e-3-search": (0.90, 0.10),  # test ranks the other way
              "lora-lr1e-2-search": (0.70, 0.95),
              "lora-r8-lr2e-3-search": (0.80, 0.5), "lora-r8-lr4e-3-search": (0.80, 0.9)}  # a tie: the first wins
    monkeypatch.setattr(runner, "run_one", fake_run_one(scores, calls))  # lora-r8-lr8e-3-search fails
    lines: list[str] = []
    outcome = run_suite(path, directory=tmp_path / "out", progress=lines.append)
    assert calls[:6] == [c.id for c in trial_cells(load_suite(path))]  # every trial before any seed
    assert outcome.failed == ["lora-r8-lr8e-3-search"]
    assert "search lora: train.learning_rate = 3e-3 (on validation accuracy)" in lines
    assert "search lora-r8: train.learning_rate = 2e-3 (on validation accuracy)" in lines
    results = {r["cell"]: r for r in load_results(tmp_path / "out")}
    assert results["lora-seed1"]["lr"] == results["lora-seed2"]["lr"] == 3e-3
    assert results["lora-r8-seed2"]["lr"] == 2e-3
    assert results["lora-seed2"]["values"] == {"train.seed": 2, "train.learning_rate": 3e-3}
    assert [t["validation"] for t in results["lora-seed1"]["search"]["tried"]] == [0.60, 0.90, 0.70]

    text, _ = render(tmp_path / "out")
    assert "## Search" in text and "(seed 5), scored on the validation split only" in text
    assert "| variant | train.learning_rate tried: validation accuracy | chosen |" in text
    assert "| lora | 1e-5: 0.6000 · **3e-3: 0.9000** · 1e-2: 0.7000 | 3e-3 |" in text
    assert "| lora-r8 | **2e-3: 0.8000** · 4e-3: 0.8000 · 8e-3: failed | 2e-3 |" in text
    header = text.splitlines().index(next(line for line in text.splitlines() if line.startswith("| variant | method")))
    table = text.splitlines()[header + 2:header + 4]  # the test table: one row per variant, its two seeds only
    assert [line.split(" | ")[0] for line in table] == ["| lora-r8", "| lora"] and text.splitlines()[header + 4] == ""
    assert all(line.endswith(" | 0.5000 ± 0.0000 | 2 |") for line in table)  # the trials are not rows of it
    rows = {r["cell"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open(encoding="utf-8"))}
    assert rows["lora-lr3e-3-search"]["validation"] == "0.9" and rows["lora-lr3e-3-search"]["chosen"] == "True"
    assert rows["lora-lr1e-5-search"]["chosen"] == "False" and rows["lora-lr1e-5-search"]["validation_metric"] \
        == "accuracy"
    assert rows["lora-seed1"]["search_value"] == "0.003" and rows["lora-seed1"]["chosen"] == ""


def test_jobs_run_cells_side_by_side_and_every_trial_before_any_seed(tmp_path: Path, sentiment_csv: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv)
    calls: list[str] = []
    scores = {"lora-lr1e-5-search": (0.60, 0.99), "lora-lr3e-3-search": (0.90, 0.10),
              "lora-lr1e-2-search": (0.70, 0.95), "lora-r8-lr2e-3-search": (0.80, 0.5),
              "lora-r8-lr4e-3-search": (0.80, 0.9)}
    monkeypatch.setattr(runner, "run_one", fake_run_one(scores, calls))
    lines: list[str] = []
    outcome = run_suite(path, directory=tmp_path / "out", progress=lines.append, jobs=4)
    trials = [c.id for c in trial_cells(load_suite(path))]
    assert sorted(calls[:6]) == sorted(trials) and len(calls) == 10  # the seeds wait for the whole search
    assert outcome.failed == ["lora-r8-lr8e-3-search"]
    assert "  lora-r8-lr8e-3-search: failed: out of memory" in lines  # side by side, each line names its cell
    results = {r["cell"]: r for r in load_results(tmp_path / "out")}
    assert results["lora-seed2"]["lr"] == 3e-3 and results["lora-r8-seed1"]["lr"] == 2e-3
    with pytest.raises(PeftkitError, match=r"--jobs must be 1 or more, got 0"):
        run_suite(path, directory=tmp_path / "out", jobs=0)


def test_search_resumes_by_value_and_reruns_seeds_when_the_choice_changes(
        tmp_path: Path, sentiment_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, variants={"lora": {}})
    calls: list[str] = []
    scores = {"lora-lr1e-5-search": (0.6, 0.5), "lora-lr3e-3-search": (0.9, 0.5), "lora-lr1e-2-search": (0.7, 0.5)}
    monkeypatch.setattr(runner, "run_one", fake_run_one(scores, calls))
    run_suite(path, directory=tmp_path / "out", progress=lambda _: None)
    assert len(calls) == 5
    calls.clear()
    again = run_suite(path, directory=tmp_path / "out", progress=lambda _: None)
    assert calls == [] and len(again.skipped) == 5
    trial = tmp_path / "out" / "cells" / "lora-lr1e-2-search.json"
    result = json.loads(trial.read_text(encoding="utf-8"))
    result["validation"]["accuracy"] = 0.95  # as if that trial had been run again and done better
    trial.write_text(json.dumps(result), encoding="utf-8")
    lines: list[str] = []
    run_suite(path, directory=tmp_path / "out", progress=lines.append)
    assert calls == ["lora-seed1", "lora-seed2"]  # the seeds follow the new choice; no trial runs again
    assert any(line.startswith("lora-seed1: its result was run with") for line in lines)
    assert json.loads((tmp_path / "out" / "cells" / "lora-seed1.json").read_text())["lr"] == 1e-2


def test_no_finished_trial_records_the_seeds_failed(tmp_path: Path, sentiment_csv: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, variants={"lora": {}})
    calls: list[str] = []
    monkeypatch.setattr(runner, "run_one", fake_run_one({}, calls))
    outcome = run_suite(path, directory=tmp_path / "out", progress=lambda _: None)
    assert calls == ["lora-lr1e-5-search", "lora-lr3e-3-search", "lora-lr1e-2-search"]  # no seed trained
    assert outcome.failed[-2:] == ["lora-seed1", "lora-seed2"]
    error = json.loads((tmp_path / "out" / "cells" / "lora-seed1.json").read_text())["error"]
    assert error == ("search: no trial finished, so no train.learning_rate was chosen (see lora-lr1e-5-search, "
                     "lora-lr3e-3-search, lora-lr1e-2-search)")
    assert "| lora | 1e-5: failed · 3e-3: failed · 1e-2: failed | – |" in render(tmp_path / "out")[0]


@pytest.mark.parametrize(("change", "message"), [
    ({"variants": {"lora": {}, "full": {"method": {"name": "full"}, "search": [1e-5, 2e-5]}}},
     r"s\.yaml: 'variants\.full\.search': 2 values, expected a list of 3 \(as many as search\.values: every variant "
     r"gets the same number of trials\)"),
    ({"variants": {"lora": {"search": 1e-3}}}, r"'variants\.lora\.search': 0\.001, expected a list of 3"),
    ({"variants": {"lora": {"train.learning_rate": 1e-3}}},
     r"'variants\.lora\.train\.learning_rate': the search chooses train\.learning_rate; list the values"),
    ({"search": {**SEARCH, "values": []}}, r"s\.yaml: 'search\.values' is empty"),
    ({"search": {**SEARCH, "values": [1e-3, 2e-3, 1e-3]}},
     r"'search\.values': \[0\.001, 0\.002, 0\.001\] lists a value twice"),
    ({"variants": {"lora": {"search": [1e-3, "a/b", 2e-3]}}},
     r"'variants\.lora\.search': 'a/b' cannot name a trial cell; give numbers or words"),
    ({"search": {**SEARCH, "vals": [1]}}, r"s\.yaml: 'search\.vals': extra inputs are not permitted"),
    ({"grid": {"train.seed": [1], "method.r": [4, 8]}},
     r"'grid\.method\.r': a suite with a 'search' may only vary train\.seed in its grid"),
    ({"search": None, "variants": {"lora": {"search": [1e-3]}}},
     r"'variants\.lora\.search': the suite has no 'search' section"),
])
def test_bad_search_spec_is_one_line_naming_file_and_key(tmp_path: Path, sentiment_csv: Path,
                                                         change: dict[str, Any], message: str) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, **change)
    with pytest.raises(PeftkitError, match=message):
        load_suite(path)


def test_search_refuses_a_recipe_without_validation_split(tmp_path: Path, sentiment_csv: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, overrides={"data.validation_size": 0})
    out = tmp_path / "out"
    assert main(["bench", str(path), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"peftkit: error: {path}: 'search': variant 'lora' has no validation split (data.validation_size "
                   "is 0 and the data has none of its own), so its trials would be scored on the test split; set "
                   "data.validation_size (e.g. 0.1) in the suite's overrides")
    assert not out.exists()  # refused before anything was written


def test_real_trials_score_validation_only_then_seeds_train_at_the_choice(tmp_path: Path, sentiment_csv: Path,
                                                                          tiny_bert: Path) -> None:
    """Real cell processes on the tiny BERT, --quick: two trials (validation scores, no test figures), one seed."""
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, tiny_bert)
    outcome = run_suite(path, quick=True, directory=tmp_path / "out", progress=lambda _: None)
    assert outcome.ran == ["lora-lr1e-5-search", "lora-lr3e-3-search", "lora-seed1"] and outcome.failed == []
    results = {r["cell"]: r for r in load_results(tmp_path / "out")}
    trials = [results["lora-lr1e-5-search"], results["lora-lr3e-3-search"]]
    for trial in trials:
        assert trial["schema"] == SCHEMA and "metrics" not in trial  # the test split was never evaluated
        assert trial["search"]["metric"] == "accuracy" and 0 <= trial["validation"]["accuracy"] <= 1
        assert trial["speed"]["steps"] == 6
    best = max(trials, key=lambda t: t["validation"]["accuracy"])  # ties: max keeps the first, as the search does
    seed = results["lora-seed1"]
    assert seed["values"] == {"train.seed": 1, "train.learning_rate": best["search"]["value"]}
    spec = json.loads((tmp_path / "out" / "specs" / "lora-seed1.json").read_text(encoding="utf-8"))
    assert spec["recipe"]["train"]["learning_rate"] == best["search"]["value"]
    assert 0 <= seed["metrics"]["accuracy"] <= 1
    text, _ = render(tmp_path / "out")
    assert "| lora | 1e-5: " in text and "3 of 3 cells ok" in text
