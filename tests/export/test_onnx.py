"""ONNX export: merged tiny runs run in onnxruntime with the adapter model's logits; failures leave nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from testkit import make_tiny, write_head_recipe

import peftkit
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.rundir.load import load_run

TEXTS = ["bob saw a great film in rome", "the plot was dull", "alice", "quite superb and really good film"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def classification_run(tiny: dict[str, Path]) -> Path:
    return peftkit.train(write_head_recipe(tiny, "classification", tiny["root"] / "runs" / "cls")).output_dir


@pytest.fixture(scope="module")
def ner_run(tiny: dict[str, Path]) -> Path:
    return peftkit.train(write_head_recipe(tiny, "ner", tiny["root"] / "runs" / "ner")).output_dir


def adapter_and_onnx(run: Path, out: Path, texts: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    loaded = load_run(run)
    inputs = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = loaded.model(**inputs).logits
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    return reference, session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]


CARD_RUN = """
import sys
sys.modules["peft"] = None  # the card's code needs neither peft nor peftkit
sys.modules["peftkit"] = None
exec(sys.argv[1])
"""


def card_code(out: Path) -> str:
    card = (out / "README.md").read_text()
    return re.search(r"## Run it with onnxruntime\n```python\n(.*?)```", card, re.S).group(1)


def test_classification_run_exports_to_onnx_with_dynamic_axes(classification_run: Path, tmp_path: Path,
                                                              capsys) -> None:
    out = tmp_path / "onnx"
    assert main(["export", str(classification_run), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity on 16 test items" in printed and "exported ONNX model (merged, float32)" in printed
    report = json.loads((out / "export_report.json").read_text())
    assert report["format"] == "onnx" and report["parity"]["checked"]
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4 and report["parity"]["prediction_agreement"] == 1.0
    assert report["inputs"] == ["input_ids", "attention_mask"]
    assert {"model.onnx", "config.json", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", "sequence"]] * 2

    for texts in (TEXTS, TEXTS[2:3], TEXTS * 5):  # batch sizes 4, 1 and 20; other sequence lengths
        reference, logits = adapter_and_onnx(classification_run, out, texts)
        assert logits.shape == tuple(reference.shape)
        assert np.abs(logits - reference.numpy()).max() <= 1e-4

    done = subprocess.run([sys.executable, "-I", "-c", CARD_RUN, card_code(out)], capture_output=True, text=True,
                          check=True)
    labels = json.loads((out / "config.json").read_text())["id2label"].values()
    printed = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in printed] == ["first", "second"] and all(
        line.split()[-1] in labels for line in printed)


def test_ner_run_exports_to_onnx_per_token(ner_run: Path, tmp_path: Path) -> None:
    from peftkit.export.onnx import export_onnx

    out = tmp_path / "ner-onnx"
    report = export_onnx(ner_run, out, samples=8)
    parity = report["parity"]
    assert parity["checked"] and parity["max_abs_logit_diff"] <= 1e-4
    assert parity["compared"] > 8 * 5  # every real token of 8 sentences of 5 words (and [CLS], [SEP])
    reference, logits = adapter_and_onnx(ner_run, out, TEXTS)
    assert logits.shape == tuple(reference.shape) and logits.shape[-1] == 3  # O, B-LOC, B-PER per token
    assert np.abs(logits - reference.numpy()).max() <= 1e-4
    assert "one tag per sub-word token" in card_code(out)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_failed_onnx_export_leaves_nothing(classification_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import peftkit.export.onnx as onnx_export

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    with pytest.raises(PeftkitError, match="is not a peftkit export"):
        onnx_export.export_onnx(classification_run, tmp_path / "mine", overwrite=True, samples=4)
    onnx_export.export_onnx(classification_run, tmp_path / "taken", samples=4)
    before = {p.name: p.read_bytes() for p in (tmp_path / "taken").iterdir()}
    real = onnx_export.onnx_logits

    def perturbed(session: Any, batches: Any) -> list[torch.Tensor]:
        return [logits + 0.01 for logits in real(session, batches)]

    monkeypatch.setattr(onnx_export, "onnx_logits", perturbed)
    with pytest.raises(PeftkitError, match=r"ONNX parity check failed: .* up to (9\.9\de-03|1\.0\de-02) "):
        onnx_export.export_onnx(classification_run, tmp_path / "taken", overwrite=True, samples=4)
    with pytest.raises(PeftkitError, match="ONNX parity check failed"):
        onnx_export.export_onnx(classification_run, tmp_path / "new" / "onnx", samples=4)
    assert leftovers(tmp_path) == ["mine", "taken"] and leftovers(tmp_path / "mine") == ["keep.txt"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "taken").iterdir()} == before  # the old export is kept

    argv = ["export", str(classification_run), "--format", "onnx", "--out", str(tmp_path / "x")]
    assert main([*argv, "--dtype", "bfloat16"]) == 2
    assert "--format onnx exports the merged model in float32; --dtype does not apply" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "peftkit: error: --format onnx needs onnx, onnxscript and onnxruntime (onnxruntime is missing); "
        "pip install 'peftkit[onnx]'")

    from transformers import AutoModelForCausalLM

    from peftkit.heads.classification import ClassificationHead

    monkeypatch.setattr(ClassificationHead, "auto_class", AutoModelForCausalLM)
    with pytest.raises(PeftkitError, match=r"task.head 'classification' \(AutoModelForCausalLM\) is not supported"):
        onnx_export.export_onnx(classification_run, tmp_path / "y")
    assert leftovers(tmp_path) == ["mine", "taken"]
