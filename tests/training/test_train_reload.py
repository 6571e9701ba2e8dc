"""Train → save → reload: loss falls, the reloaded run gives the trained model's logits, eval reproduces metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from testkit import logits_of, train_and_reload
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import peftkit
from peftkit.rundir.inference import evaluate_run
from peftkit.rundir.load import load_run

TEXTS = ["the film was really wonderful", "a boring and clumsy plot", "acting is quite charming"]

METHODS = {
    "lora": {},
    "full": {"method": {"name": "full"}, "train.learning_rate": 1e-3},
    "qlora-nf4": {"method.name": "qlora", "quantization": {"mode": "4bit", "quant_type": "nf4"}},
    "qlora-8bit": {"method.name": "qlora", "quantization": {"mode": "8bit"}},
    "head_only": {"method": {"name": "head_only"}, "train.learning_rate": 5e-2},
}


@pytest.mark.parametrize("variant", list(METHODS))
def test_train_saves_and_reloads_to_the_trained_logits(write_recipe, variant: str) -> None:
    """The reload equals the in-memory model at the end of training, which differs from the untrained one: a
    reload that dropped the adapter (peft starts lora_B at zero) or the head would fail here."""
    out = train_and_reload(write_recipe({**METHODS[variant], "train.max_steps": 120}), TEXTS)
    metrics = out["result"].metrics
    losses = [entry["loss"] for entry in metrics["loss_history"]]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, f"loss did not fall: {losses}"
    assert metrics["test"]["accuracy"] >= (0.65 if variant == "head_only" else 0.85), metrics["test"]
    assert 0 < metrics["parameters"]["trainable"] <= metrics["parameters"]["total"]
    assert out["run"].label_names == ["negative", "positive"]


def test_adapter_loads_with_plain_peft(write_recipe, tiny_bert: Path) -> None:
    result = peftkit.train(write_recipe())
    files = {p.name for p in result.output_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "recipe.yaml", "metrics.json", "README.md"} <= files
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    plain = PeftModel.from_pretrained(base, result.output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    expected = logits_of(load_run(result.output_dir).model, tokenizer, TEXTS)
    assert torch.equal(logits_of(plain, tokenizer, TEXTS), expected)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_eval_reproduces_saved_metrics(write_recipe, precision: str) -> None:
    """`peftkit eval` evaluates under the autocast the run's test metrics were measured under."""
    result = peftkit.train(write_recipe({"train.precision": precision}))
    saved = json.loads((result.output_dir / "metrics.json").read_text())["test"]
    again = evaluate_run(result.output_dir)
    assert again["accuracy"] == pytest.approx(saved["accuracy"])
    assert again["f1_macro"] == pytest.approx(saved["f1_macro"])
    assert again["confusion_matrix"] == saved["confusion_matrix"]


def test_python_api_takes_dotted_overrides(write_recipe, tmp_path: Path) -> None:
    out = tmp_path / "api-run"
    result = peftkit.train(write_recipe(), **{"train.max_steps": 6, "output_dir": str(out)})
    assert result.output_dir == out
    assert result.metrics["train"]["steps"] == 6


def test_same_seed_gives_identical_adapters(write_recipe, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = peftkit.train(write_recipe(), **{"train.max_steps": 5, "output_dir": str(tmp_path / "a")})
    b = peftkit.train(write_recipe(), **{"train.max_steps": 5, "output_dir": str(tmp_path / "b")})
    wa, wb = (load_file(str(r.output_dir / "adapter_model.safetensors")) for r in (a, b))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_real_minilm_learns_and_reloads_to_the_trained_logits(write_recipe) -> None:
    """The real MiniLM-L6 (pretrained weights are the point: 30 steps reach high accuracy)."""
    out = train_and_reload(write_recipe({"model.name": "minilm-l6", "train.learning_rate": 3e-3,
                                         "train.max_steps": 30}), TEXTS)
    assert out["result"].metrics["test"]["accuracy"] >= 0.9, out["result"].metrics["test"]
