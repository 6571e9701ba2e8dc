"""Hand the C heap's free memory back to the system between phases of a run (glibc keeps it otherwise).

glibc's malloc keeps the memory of freed chunks in its heap for reuse; a process's private memory (RssAnon) keeps
counting it. After a phase that frees much (quantizing at load, training's activations, an evaluation's batches)
``malloc_trim(0)`` returns every free page it can, so the next phase starts from what is still in use. Linux with
glibc only; elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Collect garbage, then return the C heap's free pages to the system; True when glibc released any."""
    gc.collect()
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class TrimAtPhaseEnd(TrainerCallback):
    """Trims the heap where a run's phase changes: when training ends (before the final evaluation) and after
    every evaluation (before training resumes, or before the run is saved)."""

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trim_heap()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trim_heap()
