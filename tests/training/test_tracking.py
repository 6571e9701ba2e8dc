"""`train.report_to`: TensorBoard and MLflow logs under the run, read back with their own readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testkit import make_tiny, write_head_recipe
from transformers import TrainerCallback, TrainerState

import peftkit
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.rundir.layout import BOOKKEEPING
from peftkit.rundir.load import load_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tracked_run(tiny: dict[str, Path]) -> Path:
    recipe = write_head_recipe(tiny, "sentiment", tiny["root"] / "runs" / "tracked",
                               **{"train.report_to": ["tensorboard", "mlflow"], "train.max_steps": 10})
    return peftkit.train(recipe).output_dir


def test_tensorboard_scalars_match_the_loss_history(tracked_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = json.loads((tracked_run / "metrics.json").read_text())
    events = EventAccumulator(str(tracked_run / "logs" / "tensorboard" / "tracked"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == [e["step"] for e in metrics["loss_history"]] == [2, 4, 6, 8, 10]
    assert [value for _, value in logged] == pytest.approx([e["loss"] for e in metrics["loss_history"]], rel=1e-6)
    test = events.Scalars("test/accuracy")
    assert [(e.step, e.value) for e in test] == [(10, pytest.approx(metrics["test"]["accuracy"], rel=1e-6))]
    recipe_text = events.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "report_to:\n  - tensorboard\n  - mlflow" in recipe_text and "labels:\n  - negative" in recipe_text
    load_run(tracked_run)  # the run itself is complete: staged files moved in beside the logs
    assert sorted(p.name for p in tracked_run.iterdir() if p.name.startswith(".") and p.name not in BOOKKEEPING) == []


def test_mlflow_run_in_the_file_store(tracked_run: Path) -> None:
    from mlflow import MlflowClient

    metrics = json.loads((tracked_run / "metrics.json").read_text())
    client = MlflowClient(tracking_uri=(tracked_run / "logs" / "mlruns").as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("peftkit").experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(e["step"], pytest.approx(e["loss"])) for e in
                                                    metrics["loss_history"]]
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert run.data.metrics["test/f1_macro"] == pytest.approx(metrics["test"]["f1_macro"])
    params = run.data.params
    assert params["method.r"] == "4" and params["train.max_steps"] == "10" and params["task.head"] == "sentiment"
    assert json.loads(params["task.labels"]) == ["negative", "positive"]  # the resolved recipe, labels included


class Crash(TrainerCallback):
    def on_step_end(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        if state.global_step == 3:
            raise RuntimeError("killed")


def test_logs_of_an_unfinished_run_do_not_block_resume_or_overwrite(tiny: dict[str, Path], capsys) -> None:
    out = tiny["root"] / "runs" / "crashed"
    recipe = write_head_recipe(tiny, "sentiment", out, **{"train.report_to": "tensorboard"})
    with pytest.raises(RuntimeError, match="killed"):
        peftkit.train(recipe, callbacks=[Crash()])
    written = sorted(p.name for p in out.iterdir() if p.name not in BOOKKEEPING)
    assert written == ["logs"]  # no checkpoint (save_strategy no), logs written
    capsys.readouterr()
    assert main(["runs", str(out.parent), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["crashed"]["status"] == "unfinished"

    assert peftkit.train(recipe, **{"train.resume": "auto"}).metrics["train"]["steps"] == 8  # a fresh start
    with pytest.raises(RuntimeError, match="killed"):
        peftkit.train(recipe, overwrite=True, callbacks=[Crash()])
    assert peftkit.train(recipe, overwrite=True).output_dir == out

    mine = tiny["root"] / "mine"
    (mine / "logs").mkdir(parents=True)  # a logs folder peftkit did not write is never deleted
    with pytest.raises(PeftkitError, match="is not a peftkit run"):
        peftkit.train(recipe, overwrite=True, **{"output_dir": str(mine)})
    assert (mine / "logs").is_dir()


def test_report_to_errors(tiny: dict[str, Path], monkeypatch, capsys) -> None:
    recipe = str(write_head_recipe(tiny, "sentiment", tiny["root"] / "runs" / "never"))
    assert main(["validate", recipe, "train.report_to=[none, mlflow]"]) == 2
    assert "'train.report_to': 'none' cannot be combined with mlflow" in capsys.readouterr().err
    assert main(["validate", recipe, "train.report_to=comet"]) == 2
    assert "train.report_to" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main(["train", recipe, "train.report_to=mlflow"]) == 2
    assert capsys.readouterr().err.strip() == (
        "peftkit: error: 'train.report_to': mlflow needs the mlflow package; pip install 'peftkit[mlflow]'")
    assert not (tiny["root"] / "runs" / "never").exists()
