"""benchmarks/gpu.sh on a machine without CUDA, and the GPU rows it writes into RESULTS.md."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from peftkit.errors import PeftkitError
from tools import gpu_rows as gpu

ROOT = Path(__file__).resolve().parents[2]


def _result(cell: str, status: str = "ok", device: str = "cuda", error: str | None = None) -> dict:
    return {
        "suite": "scaling", "cell": cell, "status": status, "error": error,
        "provenance": {"device": device, "gpu": "NVIDIA H100 80GB HBM3" if device == "cuda" else None,
                       "packages": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2",
                                    "bitsandbytes": "0.50.2"}},
        "speed": {"samples_per_second": 12.5} if status == "ok" else {},
        "memory": {"cuda_allocated_peak_bytes": 3 * 2**30} if status == "ok" else {},
        "metrics": {"accuracy": 0.91} if status == "ok" else {},
    }


def _bench_dir(tmp_path: Path, results: list[dict]) -> Path:
    directory = tmp_path / "bench"
    (directory / "cells").mkdir(parents=True)
    for result in results:
        (directory / "cells" / f"{result['cell']}.json").write_text(json.dumps(result), encoding="utf-8")
    return directory


def test_gpu_rows_replace_their_section(tmp_path: Path) -> None:
    directory = _bench_dir(tmp_path, [
        _result("lora-1B"), _result("full-8B", "failed", error="CUDA out of memory. Tried to allocate 2 GiB")])
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\nCPU figures above.\n", encoding="utf-8")
    gpu.write(results_md, [directory], "benchmarks/gpu.sh")
    gpu.write(results_md, [directory], "benchmarks/gpu.sh")  # a second run replaces, never duplicates
    text = results_md.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results\n\nCPU figures above.")
    assert text.count(gpu.START) == 1 and text.count("| NVIDIA H100 80GB HBM3 |") == 2
    assert "| lora-1B | ok | 12.50 | 3,072 | accuracy 0.9100 |" in text
    assert "| full-8B | out of memory | - | - | - |" in text
    assert "2.13.0 / 5.24.0 / 0.21.2 / 0.50.2" in text


def test_cpu_results_are_not_gpu_rows(tmp_path: Path) -> None:
    directory = _bench_dir(tmp_path, [_result("lora-1B", device="cpu")])
    with pytest.raises(PeftkitError, match="ran on cpu, not a CUDA GPU"):
        gpu.table([directory])


def test_gpu_sh_refuses_cleanly_without_cuda() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 2
    assert "no CUDA GPU here" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
