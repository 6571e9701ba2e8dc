"""The C heap is trimmed where a run's phase changes: after a load, when training ends, after every evaluation."""

from __future__ import annotations

import sys

import pytest
from testkit import tiny_recipe

from peftkit.model import heap


@pytest.fixture
def trims(monkeypatch) -> list[int]:
    """Every malloc_trim call, recorded instead of made."""
    calls: list[int] = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    return calls


def test_trim_heap_calls_malloc_trim_with_no_padding(trims) -> None:
    assert heap.trim_heap() is True
    assert trims == [0]


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_trim_heap_is_a_harmless_no_op_off_linux(monkeypatch, platform: str) -> None:
    heap._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", platform)
    try:
        assert heap._malloc_trim() is None
        assert heap.trim_heap() is False
    finally:
        heap._malloc_trim.cache_clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_is_found_on_linux() -> None:
    heap._malloc_trim.cache_clear()
    assert heap._malloc_trim() is not None
    heap.trim_heap()  # the real call, harmless


def test_a_load_and_every_phase_end_trim_the_heap(tmp_path, tiny_bert, sentiment_csv, monkeypatch) -> None:
    """One trim after the base model loads, one when training ends, one after the final evaluation."""
    from peftkit.config.load import recipe_from_dict
    from peftkit.model import loading
    from peftkit.training.run import train

    events: list[str] = []
    monkeypatch.setattr(loading, "trim_heap", lambda: events.append("load"))
    monkeypatch.setattr(heap, "trim_heap", lambda: events.append("phase"))
    from transformers import TrainerCallback

    class Phases(TrainerCallback):
        def on_train_begin(self, *args, **kwargs) -> None:
            events.append("train")

        def on_prediction_step(self, *args, **kwargs) -> None:
            if events[-1] != "evaluate":
                events.append("evaluate")

    recipe = recipe_from_dict(tiny_recipe(tiny_bert, sentiment_csv, {"output_dir": str(tmp_path / "run"),
                                                                      "train.max_steps": 2}))
    train(recipe, callbacks=[Phases()], quiet=True)
    assert events == ["load", "train", "phase", "evaluate", "phase"]


_MAPPED_ON_ITS_OWN = """
import ctypes, sys
from peftkit.model import heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
if sys.argv[1] == "compact":
    assert heap.compact_heap()
libc.free(libc.malloc(16 * 2**20))  # glibc's adaptive threshold rises to 16 MiB on this free
block = libc.malloc(2**20)
print(bool(ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2))  # IS_MMAPPED
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_compact_heap_maps_large_blocks_on_their_own_after_a_large_free() -> None:
    """`train.cpu_heap: compact`: a 1-MiB block stays its own mapping (unmapped when freed) after a 16-MiB free,
    where glibc's adaptive threshold would have moved it into the heap it keeps (each mode in a fresh process: the
    setting lasts for the process)."""
    import subprocess

    mapped = {mode: subprocess.run([sys.executable, "-c", _MAPPED_ON_ITS_OWN, mode], capture_output=True, text=True,
                                   check=True).stdout.strip() for mode in ("adaptive", "compact")}
    assert mapped == {"adaptive": "False", "compact": "True"}


def test_compact_recipe_sets_the_heap_before_the_model_loads(tmp_path, tiny_bert, sentiment_csv,
                                                             monkeypatch) -> None:
    from peftkit.config.load import recipe_from_dict
    from peftkit.training import build

    calls: list[str] = []
    monkeypatch.setattr(build, "compact_heap", lambda: calls.append("compact") or True)
    real_load = build.load_base_model
    monkeypatch.setattr(build, "load_base_model", lambda *a, **k: calls.append("load") or real_load(*a, **k))
    for heap_mode, expected in (("adaptive", ["load"]), ("compact", ["compact", "load"])):
        calls.clear()
        raw = tiny_recipe(tiny_bert, sentiment_csv, {"train.max_steps": 1, "train.cpu_heap": heap_mode})
        build.build_trainer(recipe_from_dict(raw, source="t"), tmp_path / heap_mode)
        assert calls == expected


def test_the_estimate_counts_no_retained_heap_under_compact() -> None:
    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware import device as devices
    from peftkit.hardware.auto import estimate_on

    raw = {"model": {"name": "minilm-l6"}, "task": {"head": "classification"},
           "method": {"name": "lora", "r": 4}, "data": {"source": "movie-snippets", "max_length": 32}}
    adaptive = estimate_on(recipe_from_dict(raw), devices.cpu())
    compact = estimate_on(recipe_from_dict({**raw, "train": {"cpu_heap": "compact"}}), devices.cpu())
    assert adaptive.device == compact.device == "cpu"
    assert adaptive.retained > 0 and compact.retained == 0 and compact.eval_retained == 0
    assert compact.total < adaptive.total
