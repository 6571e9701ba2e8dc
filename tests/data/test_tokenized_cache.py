"""The tokenized-split cache: a hit equals a fresh tokenization (and trains identically), anything that decides the
tokens is in the key, a damaged entry is tokenized again and repaired, concurrent writers leave one valid entry and
`data.cache_tokenized: false` neither reads nor writes."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from testkit import make_sentiment_rows, write_csv

import peftkit
from peftkit.config.load import load_recipe
from peftkit.data import tokenized as tokcache
from peftkit.data.pipeline import build_splits
from peftkit.model.loading import load_tokenizer
from peftkit.registry import plugins


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenized"


def build(recipe_path: Path, tokenizer: Any = None, **dotted: Any) -> Any:
    recipe = load_recipe(recipe_path, [f"{k}={json.dumps(v)}" for k, v in dotted.items()])
    head, _ = plugins(recipe)
    return build_splits(recipe, head, tokenizer or load_tokenizer(recipe.model))


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) if cache.exists() else []


def same(a: Any, b: Any) -> None:
    for name in ("train", "validation", "test"):
        assert a.tokenized[name].column_names == b.tokenized[name].column_names
        assert a.tokenized[name].features == b.tokenized[name].features
        assert a.tokenized[name].to_dict() == b.tokenized[name].to_dict()


def test_a_hit_equals_a_fresh_tokenization(write_recipe, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_recipe()
    fresh = build(recipe)
    assert len(entries(cache)) == 3
    calls = []
    monkeypatch.setattr(type(plugins(load_recipe(recipe))[0]), "tokenize",
                        lambda *a: calls.append(a) or pytest.fail("tokenized again"))
    same(build(recipe), fresh)
    assert calls == []


def timeless(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in ("runtime", "samples_per_second", "steps_per_second")}


def test_training_from_a_hit_gives_the_same_metrics(write_recipe, cache: Path) -> None:
    recipe = write_recipe({"train.max_steps": 6, "method.dropout": 0.0})
    miss = timeless(peftkit.train(recipe).metrics["test"])
    assert len(entries(cache)) == 3
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    hit = timeless(peftkit.train(recipe, overwrite=True).metrics["test"])
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before  # read, not written
    assert hit == miss and "loss" in hit and "confusion_matrix" in hit


@pytest.mark.parametrize("change", ["max_length", "tokenizer", "one_row", "label_order", "head_config"])
def test_what_decides_the_tokens_is_in_the_key(change: str, write_recipe, cache: Path, tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    data = write_csv(tmp_path / "d.csv", make_sentiment_rows(200))
    recipe = write_recipe({"data.source": str(data)})
    first = build(recipe)
    keys = set(entries(cache))
    assert len(keys) == 3
    dotted: dict[str, Any] = {}
    tokenizer = None
    if change == "max_length":
        dotted["data.max_length"] = 12
    elif change == "tokenizer":
        cased = request.getfixturevalue("case_keeping_bert")
        dotted.update({"model.name": str(cased), "model.lowercase": False})  # as shipped: case-sensitive
    elif change == "one_row":
        rows = make_sentiment_rows(200)
        rows[0] = {**rows[0], "text": rows[0]["text"] + " film"}
        write_csv(data, rows)
    elif change == "label_order":
        dotted["task.labels"] = ["positive", "negative"]
    else:
        dotted["task.multi_label"] = True
    second = build(recipe, tokenizer, **dotted)
    new = set(entries(cache)) - keys
    assert new, "a changed input must not hit the old entries"
    if change != "one_row":
        assert len(new) == 3
    else:  # the row lands in one split; the other two are unchanged and hit
        assert len(new) == 1
    if change in ("one_row", "label_order", "head_config"):
        assert any(second.tokenized[n].to_dict() != first.tokenized[n].to_dict() for n in ("train", "test"))


def _damage(entry: Path, how: str) -> None:
    record, data = entry / tokcache.RECORD, entry / tokcache.DATA
    if how == "truncated_arrow":
        data.write_bytes(data.read_bytes()[:-40])
    elif how == "flipped_byte":
        raw = bytearray(data.read_bytes())
        raw[-20] ^= 1
        data.write_bytes(bytes(raw))
    elif how == "garbage_record":
        record.write_text("{not json", encoding="utf-8")
    elif how == "record_of_wrong_shape":
        record.write_text(json.dumps({"key": entry.name, "rows": "many"}), encoding="utf-8")
    elif how == "record_is_a_symlink":
        real = entry.parent.parent / f"{entry.name}-elsewhere.json"
        record.rename(real)
        record.symlink_to(real)
    elif how == "arrow_is_a_symlink":
        real = entry.parent.parent / f"{entry.name}-elsewhere.arrow"
        data.rename(real)
        data.symlink_to(real)
    elif how == "extra_file":
        (entry / "state.json").write_text("{}", encoding="utf-8")
    elif how == "entry_is_a_file":
        shutil.rmtree(entry)
        entry.write_text("x", encoding="utf-8")
    elif how == "entry_is_a_symlink":
        real = entry.parent.parent / f"{entry.name}-moved"
        entry.rename(real)
        entry.symlink_to(real, target_is_directory=True)


@pytest.mark.parametrize("how", ["truncated_arrow", "flipped_byte", "garbage_record", "record_of_wrong_shape",
                                 "record_is_a_symlink", "arrow_is_a_symlink", "extra_file", "entry_is_a_file",
                                 "entry_is_a_symlink"])
def test_a_damaged_entry_is_tokenized_again_and_repaired(how: str, write_recipe, cache: Path) -> None:
    recipe = write_recipe()
    fresh = build(recipe)
    names = entries(cache)
    for name in names:
        _damage(cache / name, how)
    again = build(recipe)  # no error, no traceback
    same(again, fresh)
    assert entries(cache) == names
    for name in names:
        entry = cache / name
        assert entry.is_dir() and not entry.is_symlink()
        assert sorted(os.listdir(entry)) == sorted([tokcache.DATA, tokcache.RECORD])
        assert tokcache.load(name) is not None
    outside = sorted(p.name for p in cache.parent.iterdir() if p.name != "tokenized")
    assert outside == sorted(f"{n}-{o}" for n in names for o in {
        "record_is_a_symlink": ["elsewhere.json"], "arrow_is_a_symlink": ["elsewhere.arrow"],
        "entry_is_a_symlink": ["moved"]}.get(how, []))  # what a link pointed at is left where it was
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def _store_in_child(cache_root: str, key: str, rows: int, ready: Any) -> None:
    os.environ["PEFTKIT_CACHE"] = cache_root
    from datasets import Dataset

    dataset = Dataset.from_dict({"input_ids": [[i, i + 1] for i in range(rows)], "labels": list(range(rows))})
    ready.wait()
    for _ in range(5):
        tokcache.store(key, dataset)


def test_concurrent_writers_leave_one_valid_entry(cache: Path) -> None:
    key = "ab" * 32
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    children = [context.Process(target=_store_in_child, args=(str(cache.parent), key, 20000, ready))
                for _ in range(3)]
    for child in children:
        child.start()
    ready.set()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    assert entries(cache) == [key]
    loaded = tokcache.load(key)
    assert loaded is not None and len(loaded) == 20000 and loaded[5]["input_ids"] == [5, 6]
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_cache_tokenized_false_neither_reads_nor_writes(write_recipe, cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_recipe()
    build(recipe, **{"data.cache_tokenized": False})
    assert not cache.parent.exists() or not cache.exists()
    fresh = build(recipe)
    assert len(entries(cache)) == 3
    loads = []
    monkeypatch.setattr(tokcache, "load", lambda *a: loads.append(a))
    same(build(recipe, **{"data.cache_tokenized": False}), fresh)
    assert loads == []


def test_a_hit_says_so_in_its_progress_bar(write_recipe, cache: Path, capfd: pytest.CaptureFixture) -> None:
    import datasets

    datasets.enable_progress_bars()
    recipe = write_recipe()
    build(recipe)
    assert "tokenizing train:" in capfd.readouterr().err
    build(recipe)
    err = capfd.readouterr().err
    assert "tokenizing train (cached):" in err and "tokenizing train:" not in err


def test_the_oldest_entries_go_beyond_the_bounds(cache: Path) -> None:
    from datasets import Dataset

    dataset = Dataset.from_dict({"input_ids": [[1, 2, 3]] * 10})
    keys = [f"{i:064x}" for i in range(4)]
    for i, key in enumerate(keys):
        tokcache.store(key, dataset)
        os.utime(cache / key / tokcache.RECORD, (1000 + i, 1000 + i))
    foreign = cache / ("f" * 64)
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    removed = tokcache.evict(keep=keys[0], max_entries=2)
    assert sorted(p.name for p in removed) == keys[1:3]
    assert entries(cache) == sorted([keys[0], keys[3], foreign.name])


def test_a_killed_writers_work_folder_goes_a_foreign_one_stays(cache: Path) -> None:
    from datasets import Dataset

    dead, foreign = cache / ".tmp-dead", cache / ".tmp-foreign"
    for folder in (dead, foreign):
        (folder / "entry").mkdir(parents=True)
    (dead / tokcache.MARKER).write_text("pid 1", encoding="utf-8")  # its writer died: nobody holds the lock
    tokcache.store("cd" * 32, Dataset.from_dict({"input_ids": [[1]]}))
    assert not dead.exists() and (foreign / "entry").is_dir()
    assert tokcache.load("cd" * 32)["input_ids"] == [[1]]


def test_eval_of_a_run_reads_the_test_split_its_training_cached(write_recipe, cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from peftkit.rundir.inference import evaluate_run

    result = peftkit.train(write_recipe({"train.max_steps": 4}))
    stored = entries(cache)
    tokenized = []
    monkeypatch.setattr(type(plugins(load_recipe(result.output_dir / "recipe.yaml"))[0]), "tokenize",
                        lambda *a: tokenized.append(a))
    assert "accuracy" in evaluate_run(result.output_dir, show=False)  # the run's saved tokenizer keys as its source
    assert tokenized == [] and entries(cache) == stored
