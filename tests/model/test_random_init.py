"""A random-init base loads like a pretrained one: a causal LM's untied lm_head is part of its checkpoint, so
only the adapter trains (not the whole output layer through modules_to_save)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from peftkit.config.load import recipe_from_dict
from peftkit.registry import plugins


def test_an_untied_causal_lm_keeps_its_lm_head_out_of_the_trained_modules(
        tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftkit.model.loading import load_base_model

    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "untied"
    shutil.copytree(tiny_llama, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    recipe = recipe_from_dict({"model": {"name": str(base), "random_init": True,
                                         "config_overrides": {"num_hidden_layers": 1}},
                               "task": {"head": "causal_lm"}, "method": {"name": "lora", "r": 4}})
    head, method = plugins(recipe)
    model, head_modules = load_base_model(recipe.model, recipe.quantization, head, [])
    assert "lm_head" not in head_modules
    assert not model.config.tie_word_embeddings
    trained = method.apply(model, head_modules, head.task_type)
    names = [name for name, p in trained.named_parameters() if p.requires_grad]
    assert names and all("lora_" in name for name in names)


def test_a_checkpoint_another_process_built_first_is_used(tiny_llama: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `bench --jobs` cells may build the same random checkpoint at once: the later rename finds the folder
    there and uses it, where it used to fail the cell."""
    from peftkit.model.loading import random_init_checkpoint

    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    model = recipe_from_dict({"model": {"name": str(tiny_llama), "random_init": True,
                                        "config_overrides": {"num_hidden_layers": 1}},
                              "task": {"head": "causal_lm"}, "method": {"name": "lora", "r": 4}}).model
    first = Path(random_init_checkpoint(model))
    shutil.move(first, tmp_path / "built-elsewhere")
    real_replace = Path.replace

    def other_process_wins(self: Path, target: Path) -> Path:
        shutil.copytree(tmp_path / "built-elsewhere", target)  # the other cell's rename landed first
        return real_replace(self, target)  # now onto a folder that is not empty: OSError

    monkeypatch.setattr(Path, "replace", other_process_wins)
    assert random_init_checkpoint(model) == str(first)
    assert (first / "config.json").is_file()
    assert [p.name for p in first.parent.iterdir() if p.name.startswith(".")] == []  # its own staging removed
