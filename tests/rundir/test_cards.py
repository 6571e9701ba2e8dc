"""Model cards: their code runs as printed, without peftkit, naming the base by hub id, cache path or local path."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from testkit import card_code, logits_of, make_tiny, run_card, write_head_recipe

import peftkit
from peftkit.config.load import recipe_from_dict
from peftkit.export import export_run
from peftkit.rundir.cards import write_model_card
from peftkit.rundir.load import load_run

TEXTS = ["the film was really wonderful", "a boring and clumsy plot"]
#: What the test runs after a card's code: the logits of ``model`` and ``tokenizer`` (names the card defines).
LOGITS = f"""
import json, torch
model.eval()
with torch.no_grad():
    print(json.dumps(model(**tokenizer({TEXTS!r}, padding=True, return_tensors="pt")).logits.tolist()))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def card_logits(card: Path, peft: bool = True) -> torch.Tensor:
    return torch.tensor(json.loads(run_card(card, LOGITS, peft=peft).strip().splitlines()[-1]))


def run_logits(run: Path) -> torch.Tensor:
    loaded = load_run(run)
    return logits_of(loaded.model, loaded.tokenizer, TEXTS)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_run_card_code_loads_the_run_without_peftkit(tiny: dict[str, Path], method: str) -> None:
    run = peftkit.train(write_head_recipe(tiny, "sentiment", tiny["root"] / method, method={"name": method}))
    card = run.output_dir / "README.md"
    if method == "lora":  # the base is a local directory: named by its absolute path, and the card says so
        assert f"local directory `{tiny['bert']}`" in card.read_text()
        assert f'from_pretrained("{tiny["bert"]}", num_labels=2)' in card_code(card)
    torch.testing.assert_close(card_logits(card, peft=method == "lora"), run_logits(run.output_dir))


def test_export_cards_code_loads_the_export_without_peftkit(tiny: dict[str, Path], tmp_path: Path) -> None:
    run = peftkit.train(write_head_recipe(tiny, "sentiment", tiny["root"] / "for-export")).output_dir
    expected = run_logits(run)
    export_run(run, tmp_path / "merged")
    torch.testing.assert_close(card_logits(tmp_path / "merged" / "README.md", peft=False), expected, atol=1e-4,
                               rtol=1e-4)
    export_run(run, tmp_path / "adapter", mode="adapter")
    torch.testing.assert_close(card_logits(tmp_path / "adapter" / "README.md"), expected, atol=1e-5, rtol=1e-5)


def _card(tmp_path: Path, **model: object) -> tuple[str, str]:
    recipe = recipe_from_dict({"model": model, "task": {"head": "sentiment"}, "output_dir": str(tmp_path / "run")})
    write_model_card(tmp_path, recipe, {"test": {"accuracy": 0.9}})
    code = card_code(tmp_path / "README.md")
    ast.parse(code)
    return (tmp_path / "README.md").read_text(), code


def test_hub_base_is_named_by_its_id_and_revision(tmp_path: Path) -> None:
    card, code = _card(tmp_path, name="prajjwal1/bert-tiny", revision="6f75de8b60a9f8a2fdf7b69cbd86d9e64bcb3837")
    assert ('base = AutoModelForSequenceClassification.from_pretrained("prajjwal1/bert-tiny", '
            'revision="6f75de8b60a9f8a2fdf7b69cbd86d9e64bcb3837", num_labels=2)') in code
    assert "hub model `prajjwal1/bert-tiny` at revision `6f75de8b60a9f8a2fdf7b69cbd86d9e64bcb3837`" in card
    assert "\nbase_model: prajjwal1/bert-tiny\n" in card
    card, code = _card(tmp_path, name="prajjwal1/bert-tiny")
    assert 'from_pretrained("prajjwal1/bert-tiny", num_labels=2)' in code and "pinned no revision" in card


def test_catalogue_base_is_named_by_its_cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    card, code = _card(tmp_path, name="minilm-l6")
    assert f'from_pretrained("{tmp_path / "cache" / "models" / "minilm-l6"}", num_labels=2)' in code
    assert "catalogue model `minilm-l6`" in card and "`peftkit models fetch minilm-l6`" in card
    assert "base_model:" not in card  # not a hub id


@pytest.mark.parametrize("method", ["lora", "full"])
def test_cards_of_a_mean_pooled_run_pool_by_mean_without_peftkit(tiny: dict[str, Path], tmp_path: Path,
                                                                  method: str) -> None:
    run = peftkit.train(write_head_recipe(tiny, "sentiment", tiny["root"] / f"mean-{method}", method={"name": method},
                                          **{"task.pooling": "mean"})).output_dir
    expected = run_logits(run)
    assert "functools.partial(pool, pooling='mean')" in card_code(run / "README.md")
    torch.testing.assert_close(card_logits(run / "README.md", peft=method == "lora"), expected)
    export_run(run, tmp_path / "merged")
    torch.testing.assert_close(card_logits(tmp_path / "merged" / "README.md", peft=False), expected, atol=1e-4,
                               rtol=1e-4)
    if method == "lora":
        export_run(run, tmp_path / "adapter", mode="adapter")
        torch.testing.assert_close(card_logits(tmp_path / "adapter" / "README.md"), expected, atol=1e-5, rtol=1e-5)
