"""A tiny random-init BERT with a word-level tokenizer, learnable data and recipes for it: runs in seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from conftest import learnable_rows, tiny_tokenizer
from transformers import BertConfig, BertModel

from peftkit.config.overrides import apply_overrides


def make_tiny(root: Path) -> dict[str, Path]:
    """A tiny random BERT of width 32 (saved with the tests' tokenizer) and JSON Lines data for the text and NER
    heads."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, initializer_range=0.2)
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    paths = {"root": root, "bert": root / "bert"}
    for kind in ("text", "ner"):
        paths[kind] = root / f"{kind}.jsonl"
        paths[kind].write_text("".join(json.dumps(r) + "\n" for r in learnable_rows(kind, 120)), encoding="utf-8")
    return paths


def tiny_recipe(tiny: dict[str, Path], head: str, output_dir: Path, **dotted: Any) -> Path:
    """A LoRA recipe on the tiny BERT for ``head`` (sentiment, classification or ner), written beside the run."""
    task: dict[str, Any] = {"head": head}
    if head == "ner":
        task["word_split"] = "whitespace"
    recipe: dict[str, Any] = {
        "model": {"name": str(tiny["bert"])},
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "task": task,
        "data": {"source": str(tiny["ner" if head == "ner" else "text"]), "test_size": 16, "validation_size": 8,
                 "max_length": 24},
        "train": {"max_steps": 8, "batch_size": 16, "learning_rate": 1e-2, "eval_strategy": "no",
                  "save_strategy": "no", "logging_steps": 2, "warmup": 0, "group_by_length": False},
        "output_dir": str(output_dir),
    }
    recipe = apply_overrides(recipe, dotted)
    path = output_dir.parent / f"{output_dir.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path
