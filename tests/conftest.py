"""Shared fixtures: the real MiniLM-L6 from the catalogue, small learnable data, fast recipes."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["good", "great", "wonderful", "superb", "moving", "delightful", "brilliant", "charming"]
NEGATIVE = ["bad", "awful", "dull", "boring", "terrible", "lifeless", "clumsy", "tedious"]
FILLER = ["the", "film", "movie", "plot", "acting", "story", "was", "is", "really", "quite", "a", "and"]


def make_sentiment_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Short texts whose label is decided by one sentiment word: learnable in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, 4)
        words.insert(rng.randrange(5), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real MiniLM-L6 from the catalogue (fetched once into the cache)."""
    from peftkit import catalog

    return catalog.fetch_model("minilm-l6")


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 learnable sentiment rows as CSV."""
    import csv

    path = tmp_path_factory.mktemp("data") / "sentiment.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(make_sentiment_rows(400))
    return path


@pytest.fixture
def write_recipe(tmp_path: Path, minilm_dir: Path, sentiment_csv: Path) -> Callable[..., Path]:
    """Write a fast recipe (MiniLM, learnable data, 30 steps: ~5 s) with dotted overrides; returns its path."""

    def write(overrides: dict[str, Any] | None = None, name: str = "tiny.yaml") -> Path:
        recipe: dict[str, Any] = {
            "description": "tiny test recipe",
            "model": {"name": "minilm-l6"},
            "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "task": {"head": "sentiment"},
            "data": {"source": str(sentiment_csv), "test_size": 80, "validation_size": 40, "max_length": 32},
            "train": {
                "max_steps": 30, "batch_size": 16, "learning_rate": 3e-3, "eval_strategy": "no",
                "save_strategy": "no", "logging_steps": 5, "warmup": 0, "group_by_length": False,
            },
            "output_dir": str(tmp_path / "run"),
        }
        for dotted, value in (overrides or {}).items():
            node = recipe
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path

    return write


def write_json_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as JSON Lines."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
