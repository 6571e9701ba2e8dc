"""Measure DDP against FSDP on this machine's CPUs: time per optimizer step and peak private memory per process.

    python benchmarks/fsdp_cpu.py [WORK_DIR]

Full fine-tuning of the tests' tiny BERT and of the catalogue's MiniLM-L6 (fetched into the peftkit cache when
missing), 20 steps of a global batch of 16 learnable sentiment texts: one process (batch 16), two DDP processes
and two FSDP (full_shard) processes (batch 8 each), all through `peftkit train [--nproc 2]` with gloo. Private
memory (USS) of every training process is sampled every 50 ms over its whole life (loading, training, saving);
the table shows the largest per process. Time per step is the training loop's time (metrics.json) over its steps,
start-up and evaluation aside. Every process computes on one thread (OMP_NUM_THREADS=1), so one process and two
compare like for like.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from testkit import make_sentiment_rows, save_tiny_models, write_csv

MIB = 2**20
STEPS = 20
MODES = {"1 process": [], "DDP, 2 processes": ["--nproc", "2"],
         "FSDP, 2 processes": ["--nproc", "2", "distributed.fsdp=true"]}


def recipe(model: str, data: Path, output: Path, max_length: int) -> dict:
    return {"model": {"name": model}, "method": {"name": "full"}, "task": {"head": "sentiment"},
            "data": {"source": str(data), "test_size": 16, "validation_size": 8, "max_length": max_length},
            "train": {"max_steps": STEPS, "batch_size": 16, "learning_rate": 1e-4, "eval_strategy": "no",
                      "save_strategy": "no", "logging_steps": 5, "warmup": 0, "group_by_length": False},
            "output_dir": str(output)}


def peak_uss(process: subprocess.Popen) -> dict[int, int]:
    """Largest private memory of each training process (the launcher excluded when it starts workers)."""
    peaks: dict[int, int] = {}
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            workers = [p for p in tree if "-u" in p.cmdline()] or [root]  # torchrun starts workers with -u
            for member in workers:
                peaks[member.pid] = max(peaks.get(member.pid, 0), member.memory_full_info().uss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        time.sleep(0.05)
    return peaks


def measure(path: Path, extra: list[str], output: Path) -> tuple[float, int]:
    process = subprocess.Popen([sys.executable, "-m", "peftkit", "train", str(path), *extra,
                                *(["train.batch_size=8"] if "--nproc" in extra else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    peaks = peak_uss(process)
    if process.returncode != 0:
        raise SystemExit(process.stderr.read()[-2000:])
    metrics = json.loads((output / "metrics.json").read_text())
    return metrics["train"]["seconds"] / metrics["train"]["steps"], max(peaks.values())


def main(argv: list[str]) -> int:
    work = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="fsdp-bench-"))
    data = write_csv(work / "sentiment.csv", make_sentiment_rows(400))
    tiny = save_tiny_models(work / "models", width=64, position_free=True)["bert"]
    rows = []
    for label, model, length in [("tiny BERT (width 64)", str(tiny), 32), ("MiniLM-L6 (22.7M)", "minilm-l6", 64)]:
        for mode, extra in MODES.items():
            output = work / f"{Path(model).name}-{len(rows)}"
            path = work / f"{output.name}.yaml"
            path.write_text(yaml.safe_dump(recipe(model, data, output, length)), encoding="utf-8")
            seconds, peak = measure(path, extra, output)
            rows.append((label, mode, seconds, peak))
            print(f"{label}, {mode}: {seconds * 1000:.0f} ms/step, {peak / MIB:,.0f} MiB", file=sys.stderr)
    print(f"full fine-tuning, {STEPS} steps of a global batch of 16, gloo, one thread per process, "
          f"{os.cpu_count()} CPU cores")
    print("| model | processes | time per step | peak private memory per process |")
    print("|---|---|---|---|")
    for label, mode, seconds, peak in rows:
        print(f"| {label} | {mode} | {seconds * 1000:,.0f} ms | {peak / MIB:,.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
