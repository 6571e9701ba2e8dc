"""One data path (load → split → preprocess → augment → tokenize) for training, eval and export parity; a saved run
loads wherever it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from testkit import make_sentiment_rows, write_csv

import peftkit
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.export import export_run
from peftkit.export.parity import sample_batches
from peftkit.rundir.inference import evaluate_run, predict
from peftkit.rundir.load import load_run


def upper_case_csv(path: Path) -> Path:
    return write_csv(path, [{**r, "text": r["text"].upper()} for r in make_sentiment_rows(400)])


def test_eval_and_export_parity_see_the_preprocessed_text(write_recipe, case_keeping_bert: Path,
                                                          tmp_path: Path) -> None:
    """Trained on upper-case text lower-cased by `preprocess`: without the step every word would be [UNK] to the
    cased tokenizer (kept as shipped: `model.lowercase: false`) and the model could not do better than chance, so
    eval reproducing the trained accuracy and parity batches free of [UNK] show that both rebuilt the data through
    the same steps."""
    data = upper_case_csv(tmp_path / "upper.csv")
    recipe = write_recipe({"model.name": str(case_keeping_bert), "model.lowercase": False, "data.source": str(data),
                           "preprocess": ["lowercase"], "train.max_steps": 120})
    result = peftkit.train(recipe)
    accuracy = result.metrics["test"]["accuracy"]
    assert accuracy >= 0.85, result.metrics["test"]
    assert evaluate_run(result.output_dir)["accuracy"] == pytest.approx(accuracy)
    run = load_run(result.output_dir)
    batches = sample_batches(run.recipe, run.head, run.tokenizer, 16)
    ids = [i for batch in batches for i in batch["input_ids"].flatten().tolist()]
    assert run.tokenizer.unk_token_id not in ids
    first = run.tokenizer.decode(batches[0]["input_ids"][0], skip_special_tokens=True)
    assert first == first.lower() and first.split()
    report = export_run(result.output_dir, tmp_path / "merged", samples=16)
    assert report["parity"]["checked"] and report["parity"]["compared"] == 16
    assert predict(result.output_dir, ["A WONDERFUL FILM"])[0]["label"] == "positive"


def test_a_saved_run_loads_wherever_its_data_went(write_recipe, tmp_path: Path, capsys) -> None:
    """Source files are checked when training, not when a saved run is read: predict works after the data file
    moved, and eval (which needs the data) names the missing file in one line."""
    data = tmp_path / "data" / "sentiment.csv"
    data.parent.mkdir()
    write_csv(data, make_sentiment_rows(200))
    synonyms = tmp_path / "syn.txt"
    synonyms.write_text("good great\n", encoding="utf-8")
    recipe = write_recipe({"data.source": str(data), "data.test_size": 40, "data.validation_size": 20,
                           "augment": {"copies": 1, "ops": ["synonym"], "synonyms": str(synonyms)},
                           "train.max_steps": 4})
    run = peftkit.train(recipe).output_dir
    moved = run.parent / "moved-run"
    run.rename(moved)
    shutil.rmtree(data.parent)
    synonyms.unlink()
    capsys.readouterr()
    assert main(["predict", str(moved), "a great film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("positive", "negative")
    assert main(["export", str(moved), "--adapter-only", "--out", str(tmp_path / "adapter")]) == 2
    missing = [f"peftkit: error: data file '{data}' does not exist"]
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("peftkit")] == missing
    assert main(["eval", str(moved)]) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("peftkit")] == missing
    with pytest.raises(PeftkitError, match=r"'data.source': file '.*' does not exist"):
        peftkit.train(moved / "recipe.yaml", **{"output_dir": str(tmp_path / "again")})
