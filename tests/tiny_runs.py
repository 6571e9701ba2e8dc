"""A tiny random-init BERT with a word-level tokenizer, learnable data and recipes for it: runs in seconds."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import BertConfig, BertModel, BertTokenizerFast

POSITIVE = ["good", "great", "wonderful", "superb"]
NEGATIVE = ["bad", "awful", "dull", "boring"]
FILLER = ["the", "film", "plot", "was", "really", "quite", "a", "and"]
NAMES, CITIES = ["alice", "bob", "carol", "dave"], ["paris", "london", "berlin", "rome"]


def rows(kind: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Sentiment texts decided by their words (``text``) or sentences with a person and a city (``ner``)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        if kind == "text":
            label = "positive" if i % 2 == 0 else "negative"
            words = rng.sample(POSITIVE if label == "positive" else NEGATIVE, 3) + rng.sample(FILLER, 1)
            rng.shuffle(words)
            out.append({"text": " ".join(words), "label": label})
        else:
            tagged = [(w, "O") for w in rng.sample(FILLER, 3)]
            tagged.insert(rng.randrange(4), (rng.choice(NAMES), "B-PER"))
            tagged.insert(rng.randrange(5), (rng.choice(CITIES), "B-LOC"))
            out.append({"tokens": [w for w, _ in tagged], "tags": [t for _, t in tagged]})
    return out


def make_tiny(root: Path) -> dict[str, Path]:
    """A tiny random BERT (saved with its tokenizer) and JSON Lines data for the text and NER heads."""
    words = sorted({w for ws in (POSITIVE, NEGATIVE, FILLER, NAMES, CITIES) for w in ws})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = BertTokenizerFast(vocab=vocab, model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, initializer_range=0.2)
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    paths = {"root": root, "bert": root / "bert"}
    for kind in ("text", "ner"):
        paths[kind] = root / f"{kind}.jsonl"
        paths[kind].write_text("".join(json.dumps(r) + "\n" for r in rows(kind, 120)), encoding="utf-8")
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
    for key, value in dotted.items():
        node = recipe
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = output_dir.parent / f"{output_dir.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path
