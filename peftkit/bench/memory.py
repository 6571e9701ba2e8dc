"""What a benchmark cell holds, phase by phase (load / train / evaluate / save).

On a CPU two figures are kept apart: **private memory** (``RssAnon`` in /proc/self/status: tensors, allocator
and library heaps, which only this process can hold) and the **resident set** (``VmRSS``, which also counts
file pages mapped in, e.g. a checkpoint read through mmap, clean pages the kernel may drop at any time). A thread
samples both every few milliseconds, so a short spike is not missed; the resident peak is also read from the
kernel's exact high-water mark (``VmHWM``, reset at every phase change where Linux allows). On a GPU the
allocator's ``max_memory_allocated`` and ``max_memory_reserved`` are read and reset at every phase change.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peftkit.model.heap import trim_heap

PHASES = ("load", "train", "evaluate", "save")
STATUS_FILE = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
#: Seconds between samples: short allocations (an optimizer step's temporaries) last tens of milliseconds.
INTERVAL = 0.002


def read_status(fields: tuple[str, ...] = ("VmRSS", "RssAnon", "RssFile", "VmHWM")) -> dict[str, int]:
    """Those /proc/self/status fields in bytes (empty off Linux)."""
    try:
        text = STATUS_FILE.read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in fields:
            found[key] = int(rest.split()[0]) * 1024
    return found


def _reset_hwm() -> bool:
    try:
        CLEAR_REFS.write_text("5")  # VmHWM := current VmRSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


@dataclass
class PhasePeak:
    """Peaks of one phase, in bytes."""

    private: int = 0
    rss: int = 0
    cuda_allocated: int | None = None
    cuda_reserved: int | None = None


@dataclass
class MemorySampler:
    """Samples private and resident memory on a thread from ``start()`` to ``stop()``; ``phase()`` switches."""

    interval: float = INTERVAL
    peaks: dict[str, PhasePeak] = field(default_factory=dict)
    current: str = "load"
    baseline: dict[str, int] = field(default_factory=dict)
    hwm_reset: bool = False
    samples: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, phase: str = "load") -> MemorySampler:
        """Take the baseline (after a garbage collection) and start sampling in ``phase``."""
        import torch

        trim_heap()  # the baseline holds only what is still in use
        self.baseline = read_status()
        self.hwm_reset = _reset_hwm()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self.baseline["cuda_allocated"] = torch.cuda.memory_allocated()
        self.current = phase
        self.peaks = {phase: PhasePeak()}
        self._sample()
        self._thread = threading.Thread(target=self._run, name="peftkit-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        with self._lock:  # read and record under one lock, so a phase switch cannot fall between them
            status = read_status(("VmRSS", "RssAnon"))
            if not status:
                return
            peak = self.peaks.setdefault(self.current, PhasePeak())
            peak.private = max(peak.private, status.get("RssAnon", 0))
            peak.rss = max(peak.rss, status.get("VmRSS", 0))
            self.samples += 1

    def _close_phase(self) -> None:
        """Fold the exact high-water marks into the phase that ends, and reset them for the next one."""
        import torch

        self._sample()
        peak = self.peaks.setdefault(self.current, PhasePeak())
        if self.hwm_reset:
            peak.rss = max(peak.rss, read_status(("VmHWM",)).get("VmHWM", 0))
            _reset_hwm()
        if torch.cuda.is_available():
            peak.cuda_allocated = max(peak.cuda_allocated or 0, torch.cuda.max_memory_allocated())
            peak.cuda_reserved = max(peak.cuda_reserved or 0, torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()

    def phase(self, name: str) -> None:
        """From now on, samples count towards ``name`` (one of PHASES)."""
        if name == self.current:
            return
        with self._lock:
            self._close_phase()
            self.current = name
            self.peaks.setdefault(name, PhasePeak())

    def stop(self) -> None:
        """Stop sampling; the current phase is closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._close_phase()

    def summary(self) -> dict[str, Any]:
        """Peaks above the baseline, overall and by phase, with the phase each overall peak fell in."""
        base_private, base_rss = self.baseline.get("RssAnon", 0), self.baseline.get("VmRSS", 0)
        phases = {name: {"private_bytes": p.private - base_private, "rss_bytes": p.rss - base_rss,
                         "cuda_allocated_bytes": p.cuda_allocated, "cuda_reserved_bytes": p.cuda_reserved}
                  for name, p in self.peaks.items()}

        def top(key: str) -> tuple[int | None, str | None]:
            known = [(v[key], name) for name, v in phases.items() if v[key] is not None]
            return max(known) if known else (None, None)

        private, private_phase = top("private_bytes")
        rss, rss_phase = top("rss_bytes")
        allocated, allocated_phase = top("cuda_allocated_bytes")
        reserved, _ = top("cuda_reserved_bytes")
        return {
            "private_peak_bytes": private, "private_peak_phase": private_phase,
            "rss_peak_bytes": rss, "rss_peak_phase": rss_phase,
            "cuda_allocated_peak_bytes": allocated, "cuda_allocated_peak_phase": allocated_phase,
            "cuda_reserved_peak_bytes": reserved,
            "baseline_private_bytes": base_private, "baseline_rss_bytes": base_rss,
            "rss_hwm_reset": self.hwm_reset, "samples": self.samples, "interval_seconds": self.interval,
            "phases": phases,
        }


class PhaseCallback(TrainerCallback):
    """Switches the sampler's phase from the Trainer's events: steps are ``train``, prediction steps and the
    end of training ``evaluate``; after an evaluation comes ``save`` (after the final one: the test samples
    shown in metrics, the adapter and the run files), until the next step."""

    def __init__(self, sampler: MemorySampler) -> None:
        self.sampler = sampler

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.sampler.phase("train")

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.sampler.phase("train")

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.sampler.phase("evaluate")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.sampler.phase("evaluate")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.sampler.phase("save")
