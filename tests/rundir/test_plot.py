"""`peftkit plot` and a run's curves.png: loss and evaluation curves of runs on one figure, PNG or SVG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import make_tiny, write_head_recipe

import peftkit
from peftkit.cli import main
from peftkit.rundir import ownership, plot


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny runs that log the loss every 2 steps and evaluate every 4 (8 steps: 4 losses, 2 evaluations)."""
    tiny = make_tiny(tmp_path_factory.mktemp("tiny"))
    options = {"train.logging_steps": 2, "train.eval_strategy": "steps", "train.eval_steps": 4}
    return [peftkit.train(write_head_recipe(tiny, "sentiment", tiny["root"] / name, **options)).output_dir
            for name in ("a", "b")]


def _lines(fig) -> dict[str, int]:
    return {line.get_label(): len(line.get_xdata()) for ax in fig.axes for line in ax.get_lines()}


def test_loss_and_eval_curves_of_two_runs_on_one_figure(runs: list[Path], tmp_path: Path) -> None:
    metrics = [(run.name, json.loads((run / "metrics.json").read_text())) for run in runs]
    assert _lines(plot.figure(metrics)) == {"a: train loss": 4, "a: eval loss": 2, "b: train loss": 4,
                                            "b: eval loss": 2}
    assert _lines(plot.figure(metrics, "eval_accuracy")) == {"a: accuracy": 2, "b: accuracy": 2}
    assert _lines(plot.figure(metrics[:1])) == {"train loss": 4, "eval loss": 2}
    png, svg = plot.save(plot.figure(metrics), tmp_path / "c.png"), plot.save(plot.figure(metrics), tmp_path / "c.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert b"<svg" in svg.read_bytes()[:1000] and svg.stat().st_size > 10_000


def test_a_run_saves_its_curves_listed_in_its_manifest(runs: list[Path]) -> None:
    curves = runs[0] / "curves.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curves.png" in ownership.read_manifest(runs[0])["entries"]
    history = json.loads((runs[0] / "metrics.json").read_text())["eval_history"]
    assert [e["step"] for e in history] == [4, 8] and {"eval_loss", "eval_accuracy"} <= set(history[0])


def test_plot_verb_writes_png_and_svg(runs: list[Path], tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "acc.svg"
    assert main(["plot", *map(str, runs), "--metric", "eval_accuracy", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"eval_accuracy of 2 runs drawn in {out}\n"
    assert b"<svg" in out.read_bytes()[:1000]
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(runs[0])]) == 0 and (tmp_path / "curves.png").stat().st_size > 10_000
    assert main(["plot", str(runs[0])]) == 2  # the default name is not replaced
    assert "'curves.png' already exists" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--metric", "accuracy"], "--metric 'accuracy': expected loss or an evaluation score"),
    (["--metric", "eval_bleu"], "metrics.json has no eval_bleu curve"),
    (["--out", "x.pdf"], "--out 'x.pdf': expected a file name ending in .png or .svg"),
])
def test_bad_plot_arguments_are_one_line(runs: list[Path], tmp_path: Path, capsys, argv: list[str],
                                         message: str) -> None:
    assert main(["plot", str(runs[0]), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftkit: error: ") and message in err and err.count("\n") == 1


def test_damaged_history_is_one_line(runs: list[Path], tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    (broken / "metrics.json").write_text(json.dumps({**metrics, "loss_history": [{"step": 2, "loss": "low"}]}))
    assert main(["plot", str(broken), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "'loss_history[0].loss' is a string, expected a number" in err
    assert err.count("\n") == 1 and not (tmp_path / "x.png").exists()


def test_a_failing_plot_never_fails_the_save(tmp_path: Path, monkeypatch, capsys) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no fonts here")

    monkeypatch.setattr(plot, "figure", broken)
    tiny = make_tiny(tmp_path / "tiny")
    run = peftkit.train(write_head_recipe(tiny, "sentiment", tmp_path / "run")).output_dir
    assert (run / "metrics.json").is_file() and not (run / "curves.png").exists()
    assert "curves.png was not drawn (no fonts here)" in capsys.readouterr().err
    assert "curves.png" not in ownership.read_manifest(run)["entries"]
