"""Shared fixtures: tiny random-init models built once per session (a BERT and a Llama sharing a word-level
tokenizer), small learnable data, fast recipes. The real catalogue models are used only by tests marked slow."""

from __future__ import annotations

import gc
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
# One intra-op thread: the tests' tensors are tiny, and handing them between threads costs more than it saves
# (7x on a loaded 2-core machine). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

POSITIVE = ["good", "great", "wonderful", "superb", "moving", "delightful", "brilliant", "charming"]
NEGATIVE = ["bad", "awful", "dull", "boring", "terrible", "lifeless", "clumsy", "tedious"]
FILLER = ["the", "film", "movie", "plot", "acting", "story", "was", "is", "really", "quite", "a", "and"]
NAMES, CITIES = ["alice", "bob", "carol", "dave"], ["paris", "london", "berlin", "rome"]
COLOURS = {"banana": "yellow", "apple": "red", "lime": "green", "plum": "purple"}
#: Other words the tests type; anything else becomes [UNK].
EXTRA_WORDS = ["colour", "of", "saw", "in", "with", "music", "what", "instruction", "response", "###", "?", ":",
               "#", ".", ",", "!", "not", "very", "an", "it", "this", "that", "i", "loved", "hated", "ripe", "cherry",
               "kiwi", "went", "to", "today", "man", "see", "then", "left", "quickly"]


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


def learnable_rows(kind: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows a tiny model learns in a dozen steps, for each kind of test data: ``text`` (sentiment decided by three
    of its four words), ``ner`` (a person and a city among filler words) or ``causal`` (a fruit's colour)."""
    rng = random.Random(seed)
    positive, negative = POSITIVE[:4], NEGATIVE[:4]
    filler = ["the", "film", "plot", "was", "really", "quite", "a", "and"]
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if kind == "text":
            label = "positive" if i % 2 == 0 else "negative"
            words = rng.sample(positive if label == "positive" else negative, 3) + rng.sample(filler, 1)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
        elif kind == "ner":
            tagged = [(w, "O") for w in rng.sample(filler, 3)]
            tagged.insert(rng.randrange(4), (rng.choice(NAMES), "B-PER"))
            tagged.insert(rng.randrange(5), (rng.choice(CITIES), "B-LOC"))
            rows.append({"tokens": [w for w, _ in tagged], "tags": [t for _, t in tagged]})
        else:
            fruit = rng.choice(list(COLOURS))
            rows.append({"prompt": f"colour of {fruit}?", "response": f"{fruit} is {COLOURS[fruit]}"})
    return rows


def tiny_tokenizer() -> Any:
    """A word-level (WordPiece over whole words) tokenizer over the test vocabulary: tiny embeddings and LM heads."""
    from transformers import BertTokenizerFast

    words = {w for ws in (POSITIVE, NEGATIVE, FILLER, NAMES, CITIES, list(COLOURS), list(COLOURS.values()),
                          EXTRA_WORDS) for w in ws}
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(specials + sorted(words))},
                             eos_token="[SEP]", model_input_names=["input_ids", "attention_mask"])


#: The size of both tiny models: 2 layers of width 64 (about 0.1 M parameters), no dropout.
TINY_SIZE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(autouse=True)
def _frozen_heap() -> Any:
    """After each test, collect its garbage and move what is left out of the collector's reach (gc.freeze):
    peftkit and the Trainer call gc.collect on every run, and in a long test session each call would otherwise
    walk every object the imports and earlier tests left (about a second per call)."""
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directories of a tiny random BERT (encoder) and a tiny random Llama (causal LM), each with the tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny-models")
    tokenizer = tiny_tokenizer()
    size = {**TINY_SIZE, "vocab_size": tokenizer.vocab_size}
    torch.manual_seed(0)
    models = {
        "bert": BertModel(BertConfig(initializer_range=0.2, **size)),
        "llama": LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, pad_token_id=0, initializer_range=0.2,
                                              eos_token_id=tokenizer.eos_token_id, **size)),
    }
    with torch.no_grad():  # position-free: a word decides its label wherever it stands, learnable in ~60 steps
        models["bert"].embeddings.position_embeddings.weight.zero_()
    paths = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="session")
def tiny_bert(tiny_models: dict[str, Path]) -> Path:
    """A tiny random-init BERT with a word-level tokenizer, saved to a directory (a recipe's model.name)."""
    return tiny_models["bert"]


@pytest.fixture(scope="session")
def tiny_llama(tiny_models: dict[str, Path]) -> Path:
    """A tiny random-init Llama causal LM sharing the tiny BERT's tokenizer."""
    return tiny_models["llama"]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real MiniLM-L6 from the catalogue (fetched once into the cache): for slow tests and tokenizer checks."""
    from peftkit.data.cache import fetch_model

    return fetch_model("minilm-l6")


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
def write_recipe(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> Callable[..., Path]:
    """Write a fast recipe (tiny BERT, learnable data, 60 steps: about two seconds) with dotted overrides; returns its
    path. ``model.name`` may be overridden with a real model for the slow tests."""

    def write(overrides: dict[str, Any] | None = None, name: str = "tiny.yaml") -> Path:
        from peftkit.config.overrides import apply_overrides

        recipe: dict[str, Any] = {
            "description": "tiny test recipe",
            "model": {"name": str(tiny_bert)},
            "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "task": {"head": "sentiment"},
            "data": {"source": str(sentiment_csv), "test_size": 80, "validation_size": 40, "max_length": 32},
            "train": {
                "max_steps": 60, "batch_size": 16, "learning_rate": 1e-2, "eval_strategy": "no",
                "save_strategy": "no", "logging_steps": 5, "warmup": 0, "group_by_length": False,
            },
            "output_dir": str(tmp_path / "run"),
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(apply_overrides(recipe, overrides or {})), encoding="utf-8")
        return path

    return write


def write_json_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as JSON Lines."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def logits_of(model: Any, tokenizer: Any, texts: list[str], eval_mode: bool = True) -> Any:
    """The model's logits for ``texts``, in evaluation mode unless ``eval_mode`` is False (the mode it had is
    restored). bitsandbytes repacks 4-bit weights for inference on a CPU on the first eval-mode call, after which
    they cannot be trained: a model about to train is probed in training mode."""
    import torch

    was_training = model.training
    model.train(not eval_mode and was_training)
    device = next(model.parameters()).device
    with torch.no_grad():
        inputs = tokenizer(texts, padding=True, return_tensors="pt").to(device)
        logits = model(**inputs).logits.float().cpu()
    model.train(was_training)
    return logits


def logits_probe(texts: list[str]) -> Any:
    """A Trainer callback that keeps the model's logits for ``texts`` before and right after training
    (``.untrained``, ``.trained``): what a reloaded run must reproduce, and what it must differ from."""
    from transformers import TrainerCallback

    class LogitsProbe(TrainerCallback):
        untrained: Any = None
        trained: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                           processing_class: Any = None, **kwargs: Any) -> None:
            self.untrained = logits_of(model, processing_class, texts, eval_mode=False)

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None,
                         processing_class: Any = None, **kwargs: Any) -> None:
            self.trained = logits_of(model, processing_class, texts)

    return LogitsProbe()


def train_and_reload(recipe: Path, texts: list[str], **overrides: Any) -> dict[str, Any]:
    """`peftkit.train` with a logits probe, then `load_run`: asserts the reloaded run gives the trained model's
    logits bit for bit and that training changed them; returns the result, the probe and the loaded run."""
    import torch

    import peftkit
    from peftkit.rundir.load import load_run

    probe = logits_probe(texts)
    result = peftkit.train(recipe, callbacks=[probe], **overrides)
    run = load_run(result.output_dir)
    reloaded = logits_of(run.model, run.tokenizer, texts)
    assert not torch.allclose(probe.trained, probe.untrained, atol=1e-4), "training did not change the logits"
    assert torch.equal(reloaded, probe.trained), (reloaded - probe.trained).abs().max()
    return {"result": result, "probe": probe, "run": run, "reloaded": reloaded}
