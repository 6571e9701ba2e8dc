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
