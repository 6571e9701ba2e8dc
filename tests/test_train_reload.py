"""Train → save → reload: loss falls, the reloaded run gives identical logits, eval reproduces metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import peftkit
from peftkit.run import evaluate_run, load_run

TEXTS = ["the film was really wonderful", "a boring and clumsy plot", "acting is quite charming"]

METHODS = {
    "lora": {},
    "full": {"method": {"name": "full"}, "train.learning_rate": 1e-4},
    "qlora-nf4": {"method.name": "qlora", "quantization": {"mode": "4bit", "quant_type": "nf4"}},
    "qlora-8bit": {"method.name": "qlora", "quantization": {"mode": "8bit"}},
    "head_only": {"method": {"name": "head_only"}, "train.learning_rate": 2e-2, "train.max_steps": 60},
}


def logits_of(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("variant", list(METHODS))
def test_train_saves_and_reloads_to_identical_logits(write_recipe, variant: str) -> None:
    result = peftkit.train(write_recipe(METHODS[variant]))
    losses = [entry["loss"] for entry in result.metrics["loss_history"]]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, f"loss did not fall: {losses}"
    assert result.metrics["test"]["accuracy"] > 0.5
    assert 0 < result.metrics["parameters"]["trainable"] <= result.metrics["parameters"]["total"]

    run = load_run(result.output_dir)
    tokenizer = run.tokenizer
    first = logits_of(run.model, tokenizer, TEXTS)
    second = logits_of(load_run(result.output_dir).model, tokenizer, TEXTS)
    assert torch.equal(first, second)
    assert run.label_names == ["negative", "positive"]


def test_trained_logits_survive_the_save(write_recipe) -> None:
    """The model in memory at the end of training and the reloaded run agree exactly."""
    from peftkit.recipe import load_recipe
    from peftkit.training import build_trainer, save_run

    recipe = load_recipe(write_recipe())
    output_dir = Path(recipe.output_dir)
    output_dir.mkdir(parents=True)
    prepared = build_trainer(recipe, output_dir)
    prepared.trainer.train()
    recipe.task.labels = prepared.label_names
    model = prepared.trainer.model.eval()
    tokenizer = prepared.trainer.processing_class
    before = logits_of(model, tokenizer, TEXTS)
    save_run(recipe, prepared.trainer, prepared.method, output_dir, {"test": {}})
    after = logits_of(load_run(output_dir).model, tokenizer, TEXTS)
    assert torch.equal(before, after)


def test_adapter_loads_with_plain_peft(write_recipe, minilm_dir: Path) -> None:
    result = peftkit.train(write_recipe())
    files = {p.name for p in result.output_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "recipe.yaml", "metrics.json", "README.md"} <= files
    base = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    plain = PeftModel.from_pretrained(base, result.output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    expected = logits_of(load_run(result.output_dir).model, tokenizer, TEXTS)
    assert torch.equal(logits_of(plain, tokenizer, TEXTS), expected)


def test_eval_reproduces_saved_metrics(write_recipe) -> None:
    result = peftkit.train(write_recipe())
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
