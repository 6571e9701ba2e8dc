"""Hand the C heap's free memory back to the system between phases of a run (glibc keeps it otherwise).

glibc's malloc keeps the memory of freed chunks in its heap for reuse; a process's private memory (RssAnon) keeps
counting it. After a phase that frees much (quantizing at load, training's activations, an evaluation's batches)
``malloc_trim(0)`` returns every free page it can, so the next phase starts from what is still in use. With
``train.cpu_heap: compact`` the mmap threshold is fixed instead, so large blocks are never kept at all. Linux with
glibc only; elsewhere (macOS, musl, Windows) both do nothing.
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

#: glibc's mallopt parameter for the mmap threshold, and the value ``train.cpu_heap: compact`` fixes it at (bytes).
M_MMAP_THRESHOLD = -3
COMPACT_MMAP_THRESHOLD = 128 * 1024


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def compact_heap() -> bool:
    """Fix glibc's mmap threshold at 128 KiB for the rest of the process (``train.cpu_heap: compact``): each block
    above it is mapped on its own and unmapped when freed, and glibc no longer raises the threshold after large
    frees. True where glibc took the setting."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, COMPACT_MMAP_THRESHOLD))


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
