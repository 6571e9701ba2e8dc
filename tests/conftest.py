"""Fixtures: the session's tiny random-init models (a BERT and a Llama sharing a word-level tokenizer), learnable
sentiment data and the fast recipe, all built from testkit.py; the thread and heap settings every test runs under;
the `gpu` marker's skip. The real catalogue models are used only by tests marked slow."""

from __future__ import annotations

import gc
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import make_sentiment_rows, save_tiny_models, tiny_recipe, tiny_tokenizer, write_csv, write_recipe_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: the tests' tensors are tiny, and handing them between threads costs more than it saves
# (7x on a loaded 2-core machine). Set before torch is imported (testkit imports it only when called);
# subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The fast recipe `write_recipe` writes, over testkit's `tiny_recipe`: 60 steps on the tiny BERT, 80 test rows.
FAST_SENTIMENT = {
    "description": "tiny test recipe",
    "method.target_modules": ["query", "value"],
    "data.test_size": 80, "data.validation_size": 40, "data.max_length": 32,
    "train.max_steps": 60, "train.logging_steps": 5,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` are skipped where torch sees no CUDA device."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """PEFTKIT_CACHE for the whole session, the subprocesses tests start included: the fetched catalogue (data/,
    models/ and their staging folder .tmp/) of the cache the tests started with is linked in, while what runs
    write (tokenized splits, random-init checkpoints of the session's tiny models) stays in a temporary folder."""
    from peftkit.data.cache import cache_root

    user, session = cache_root(), tmp_path_factory.mktemp("peftkit-cache")
    for part in ("data", "models", ".tmp"):
        (user / part).mkdir(parents=True, exist_ok=True)
        (session / part).symlink_to(user / part, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFTKIT_CACHE", str(session))
        yield


@pytest.fixture(autouse=True)
def _own_tokenized_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty tokenized-split cache of its own (its hits come from its own runs), unless it
    points PEFTKIT_CACHE somewhere itself: the user's tokenized splits are neither read nor filled by the tests."""
    from peftkit.data import tokenized
    from peftkit.data.cache import cache_root

    session_cache = os.environ.get("PEFTKIT_CACHE")
    own = tmp_path_factory.mktemp("tokenized-cache")  # beside the test's tmp_path, which tests snapshot
    monkeypatch.setattr(tokenized, "root", lambda: cache_root() / "tokenized"
                        if os.environ.get("PEFTKIT_CACHE") != session_cache else own)


@pytest.fixture(autouse=True)
def _frozen_heap() -> Any:
    """After each test, collect its garbage and move what is left out of the collector's reach (gc.freeze):
    peftkit and the Trainer call gc.collect on every run, and in a long test session each call would otherwise
    walk every object the imports and earlier tests left (about a second per call)."""
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture
def default_sigint() -> Any:
    """Ctrl-C as a terminal delivers it: Python's own SIGINT handler for the test, whatever the session inherited
    (a shell starts background jobs with SIGINT ignored, e.g. `bash .ci/run &` or under nohup)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directories of a tiny random BERT (encoder, position-free) and a tiny random Llama (causal LM) of width 64,
    each with the tokenizer."""
    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"), width=64, position_free=True, llama=True)


@pytest.fixture(scope="session")
def tiny_bert(tiny_models: dict[str, Path]) -> Path:
    """A tiny random-init BERT with a word-level tokenizer, saved to a directory (a recipe's model.name)."""
    return tiny_models["bert"]


@pytest.fixture
def case_keeping_bert(tiny_bert: Path, tmp_path: Path) -> Path:
    """The tiny BERT with a tokenizer that keeps case over its lower-case vocabulary (m3e-small's kind): "GOOD" is
    [UNK] to it as shipped."""
    path = tmp_path / "case-keeping-bert"
    shutil.copytree(tiny_bert, path)
    tiny_tokenizer(lowercase=False).save_pretrained(path)
    return path


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
    return write_csv(tmp_path_factory.mktemp("data") / "sentiment.csv", make_sentiment_rows(400))


@pytest.fixture
def write_recipe(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> Callable[..., Path]:
    """Write a fast recipe (tiny BERT, learnable data, 60 steps: about two seconds) with dotted overrides; returns its
    path. ``model.name`` may be overridden with a real model for the slow tests."""

    def write(overrides: dict[str, Any] | None = None, name: str = "tiny.yaml") -> Path:
        recipe = tiny_recipe(tiny_bert, sentiment_csv, FAST_SENTIMENT, {"output_dir": str(tmp_path / "run")},
                             overrides or {})
        return write_recipe_file(tmp_path / name, recipe)

    return write
