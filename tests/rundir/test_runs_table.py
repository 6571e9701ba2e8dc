"""`peftkit runs`: finished runs with their figures; unfinished and broken run directories listed as such."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import make_tiny, write_head_recipe
from transformers import TrainerCallback, TrainerState

import peftkit
from peftkit.cli import main


class StopAt(TrainerCallback):
    """Crash the run after a step, as a killed process would leave it (checkpoints, no metrics.json)."""

    def on_step_end(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        if state.global_step == 5:  # checkpoint-4 was saved at the end of step 4
            raise RuntimeError("killed")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny = make_tiny(tmp_path_factory.mktemp("tiny"))
    root = tmp_path_factory.mktemp("runs")
    peftkit.train(write_head_recipe(tiny, "sentiment", root / "sent"))
    peftkit.train(write_head_recipe(tiny, "ner", root / "group" / "ner", **{"method.r": 8}))
    with pytest.raises(RuntimeError, match="killed"):
        peftkit.train(write_head_recipe(tiny, "sentiment", root / "crashed",
                                        **{"train.save_strategy": "steps", "train.save_steps": 2}),
                      callbacks=[StopAt()])
    shutil.copytree(root / "sent", root / "bad-metrics")
    (root / "bad-metrics" / "metrics.json").write_text('{"test": {"accuracy": 0.')
    shutil.copytree(root / "sent", root / "no-recipe")
    (root / "no-recipe" / "recipe.yaml").unlink()
    shutil.copytree(root / "sent", root / "odd-metrics")
    (root / "odd-metrics" / "metrics.json").write_text('{"test": [1], "parameters": {"trainable_percent": "x"}}')
    (root / "empty").mkdir()
    (root / "exported").mkdir()
    (root / "exported" / "export_report.json").write_text("{}")
    (root / "notes.txt").write_text("not a run")
    return root


def test_table_lists_finished_unfinished_and_broken_runs(runs: Path, capsys) -> None:
    assert main(["runs", str(runs), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == ["bad-metrics", "crashed", "empty", "group/ner", "no-recipe", "odd-metrics", "sent"]

    sent, ner = rows["sent"], rows["group/ner"]
    metrics = json.loads((runs / "sent" / "metrics.json").read_text())
    assert sent["status"] == "finished" and sent["note"] == ""
    assert (sent["model"], sent["method"], sent["quantization"], sent["head"], sent["data"]) == (
        "bert", "lora", "none", "sentiment", "text.jsonl")
    assert sent["metric"] == "accuracy" and sent["metric_value"] == metrics["test"]["accuracy"]
    assert sent["trainable_percent"] == metrics["parameters"]["trainable_percent"]
    assert sent["train_seconds"] == metrics["train"]["seconds"] and sent["steps"] == 8
    assert ner["metric"] == "f1" and ner["head"] == "ner" and ner["data"] == "ner.jsonl"
    saved = yaml.safe_load((runs / "sent" / "recipe.yaml").read_text(encoding="utf-8"))
    assert sent["pooling"] == saved["task"]["pooling"] in ("cls", "pooler", "mean", "last")  # resolved, not auto
    assert ner["pooling"] is None  # a token head pools nothing
    assert ner["trainable_percent"] > sent["trainable_percent"]  # r=8 vs r=4

    assert rows["crashed"]["status"] == "unfinished"
    assert rows["crashed"]["note"] == "no metrics.json: checkpoint at step 4 of 8"
    assert rows["empty"]["status"] == "unfinished" and "nothing written yet" in rows["empty"]["note"]
    assert rows["bad-metrics"]["status"] == "broken" and "metrics.json unreadable" in rows["bad-metrics"]["note"]
    assert rows["bad-metrics"]["method"] == "lora"  # what could be read is still shown
    assert rows["no-recipe"]["status"] == "broken" and rows["no-recipe"]["note"] == "no recipe.yaml"
    assert rows["no-recipe"]["metric_value"] == metrics["test"]["accuracy"]
    odd = rows["odd-metrics"]  # fields of the wrong type are left blank and named, the row is still listed
    assert odd["status"] == "broken" and odd["metric"] is None and odd["trainable_percent"] is None
    assert odd["note"] == ("metrics.json: test is a list, expected an object; metrics.json: "
                           "parameters.trainable_percent is a string, expected a number")


def test_text_table_sorting_and_csv(runs: Path, capsys) -> None:
    assert main(["runs", str(runs), "--sort", "trainable"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "status", "model", "method"]
    names = [line.split()[0] for line in lines[1:]]  # smallest trainable share first, runs without one last
    assert names == ["no-recipe", "sent", "group/ner", "bad-metrics", "crashed", "empty", "odd-metrics"]
    crashed = next(line for line in lines if line.startswith("crashed"))
    assert "unfinished" in crashed and crashed.endswith("no metrics.json: checkpoint at step 4 of 8")

    assert main(["runs", str(runs), "--sort", "trainable", "--reverse", "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in table][:4] == ["group/ner", "no-recipe", "sent", "bad-metrics"]
    assert table[0]["metric"] == "f1" and float(table[0]["trainable_percent"]) > float(table[1]["trainable_percent"])

    assert main(["runs", str(runs / "sent")]) == 0  # a run directory itself
    header, sent = capsys.readouterr().out.splitlines()
    assert sent.startswith("sent ") and "head (pooling)" in header
    pooling = yaml.safe_load((runs / "sent" / "recipe.yaml").read_text(encoding="utf-8"))["task"]["pooling"]
    assert f" sentiment ({pooling}) " in sent


def test_bad_arguments_are_one_line(runs: Path, tmp_path: Path, capsys) -> None:
    assert main(["runs", str(runs), "--sort", "speed"]) == 2
    assert capsys.readouterr().err.strip() == (
        "peftkit: error: --sort 'speed': expected one of name, status, model, method, quantization, head, data, "
        "metric, trainable, time, date")
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert "directory '" in capsys.readouterr().err
    assert main(["runs", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no runs found"


def test_a_benchmark_folder_is_no_run_but_its_kept_runs_are(runs: Path, tmp_path: Path, capsys) -> None:
    """A `peftkit bench` output folder (suite.yaml, cells/, logs/, specs/, runs/ with --keep-runs) is not listed as an
    unfinished run, whether found below the folder or given itself; the runs it kept are."""
    bench = tmp_path / "runs-root" / "bench-out"
    for folder in ("cells", "logs", "specs"):
        (bench / folder).mkdir(parents=True)
    (bench / "suite.yaml").write_text("name: tiny\n")
    (bench / "cells" / "c1.json").write_text('{"status": "ok"}')
    (bench / "logs" / "c1.log").write_text("training\n")
    shutil.copytree(runs / "sent", bench / "runs" / "c1")
    assert main(["runs", str(tmp_path / "runs-root"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["status"]) for r in rows] == [("bench-out/runs/c1", "finished")]
    assert main(["runs", str(bench), "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["runs/c1"]


def test_a_finished_run_keeps_a_lock_that_says_it_was_released(runs: Path) -> None:
    text = (runs / "sent" / ".peftkit-lock").read_text()
    assert text.startswith("released by pid ") and text.endswith(": no process holds it")
