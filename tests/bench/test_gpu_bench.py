"""The offline GPU proof (benchmarks/gpu.sh) on a machine without CUDA: its dry run, fixtures, wheels, the
out-of-memory label, and the GPU rows it writes into RESULTS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from peftkit.bench.cell import failure, status_label
from peftkit.errors import PeftkitError
from peftkit.training.guards import out_of_memory_hint
from tools import gpu_fixtures, gpu_proof
from tools import gpu_rows as gpu

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"suite": "gpu-proof", "cell": "oom", "variant": "oom", "values": {}}


def _guarded_oom() -> BaseException:
    """What a cell sees when the GPU runs out of memory in training: the guard's one-line error."""
    with pytest.raises(PeftkitError) as caught, out_of_memory_hint(64, 1, 4096):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 74.25 GiB")
    return caught.value


def _result(cell: str, status: str = "ok", device: str = "cuda", error: BaseException | None = None) -> dict:
    result = {
        "suite": "scaling", "cell": cell, "status": status,
        "provenance": {"device": device, "gpu": "NVIDIA H100 80GB HBM3" if device == "cuda" else None,
                       "packages": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2",
                                    "bitsandbytes": "0.50.2"}},
        "speed": {"samples_per_second": 12.5, "tokens_per_second": 6400.0} if status == "ok" else {},
        "memory": {"cuda_allocated_peak_bytes": 3 * 2**30, "cuda_reserved_peak_bytes": 4 * 2**30,
                   "predicted_bytes": 2**31} if status == "ok" else {},
        "metrics": {"accuracy": 0.91} if status == "ok" else {},
    }
    return {**result, **failure({**SPEC, "cell": cell}, error), "provenance": result["provenance"]} if error \
        else result


def _bench_dir(tmp_path: Path, results: list[dict]) -> Path:
    directory = tmp_path / "bench"
    (directory / "cells").mkdir(parents=True)
    for result in results:
        (directory / "cells" / f"{result['cell']}.json").write_text(json.dumps(result), encoding="utf-8")
    return directory


def _fake_wheels(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name, version in gpu_proof.WHEELS:
        (directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"")
    return directory


def test_out_of_memory_label_comes_from_the_guard() -> None:
    error = _guarded_oom()
    assert str(error).startswith("out of GPU memory with train.batch_size=64")  # what the user reads
    result = failure(SPEC, error)
    assert result["status"] == "failed" and result["out_of_memory"] is True
    assert status_label(result) == "out of memory"
    assert gpu_proof.cell_line(result).endswith("| out of memory")  # the proof's line for its oom cell
    raw = failure(SPEC, torch.OutOfMemoryError("CUDA out of memory."))  # outside the training loop (loading)
    assert status_label(raw) == "out of memory"
    other = failure(SPEC, PeftkitError("training loss became nan at step 1"))
    assert status_label(other) == "failed: PeftkitError: training loss became nan at step 1"


def test_gpu_rows_replace_their_section(tmp_path: Path) -> None:
    directory = _bench_dir(tmp_path, [_result("lora-1B"), _result("full-8B", "failed", error=_guarded_oom())])
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\nCPU figures above.\n", encoding="utf-8")
    gpu.write(results_md, [directory], "benchmarks/gpu.sh")
    gpu.write(results_md, [directory], "benchmarks/gpu.sh")  # a second run replaces, never duplicates
    text = results_md.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results\n\nCPU figures above.")
    assert text.count(gpu.START) == 1 and text.count("| NVIDIA H100 80GB HBM3 |") == 2
    assert "| lora-1B | ok | 12.50 | 6,400 | 3,072 | 4,096 | 2,048 | accuracy 0.9100 |" in text
    assert "| full-8B | out of memory | - | - | - | - | - | - |" in text
    assert "2.13.0 / 5.24.0 / 0.21.2 / 0.50.2" in text


def test_cpu_results_are_not_gpu_rows(tmp_path: Path) -> None:
    directory = _bench_dir(tmp_path, [_result("lora-1B", device="cpu")])
    with pytest.raises(PeftkitError, match="ran on cpu, not a CUDA GPU"):
        gpu.table([directory])


def _gpu_sh(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)


def test_gpu_sh_refuses_cleanly_without_cuda(tmp_path: Path) -> None:
    done = _gpu_sh("--output-dir", str(tmp_path / "out"), tmp_path=tmp_path)
    assert done.returncode == 2
    assert "no CUDA GPU here" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == "" and not (tmp_path / "out").exists()  # nothing installed or built


def test_dry_run_lists_the_cells_and_finds_every_wheel(tmp_path: Path) -> None:
    wheels = _fake_wheels(tmp_path / "wheels")
    done = _gpu_sh("--dry-run", "--wheels", str(wheels), "--output-dir", str(tmp_path / "out"), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    for cell in ("qlora-auto", "qlora-ckpt", "lora-bf16", "lora-packing", "full-bf16", "fp16-older", "oom",
                 "ab-upcast", "ab-freeze-only"):
        assert f"\n  {cell} " in done.stdout
    assert f"{len(gpu_proof.WHEELS)} of {len(gpu_proof.WHEELS)} present" in done.stdout
    assert "Qwen--Qwen2.5-7B-Instruct/config.json (hidden 3584, 2 of 28 layers" in done.stdout
    assert "not built yet" in done.stdout and "seam peftkit.methods.base.get_peft_model: found" in done.stdout
    assert not (tmp_path / "out").exists()


def test_dry_run_names_a_missing_wheel_and_how_to_fetch_it(tmp_path: Path) -> None:
    wheels = _fake_wheels(tmp_path / "wheels")
    next(wheels.glob("bitsandbytes-*")).unlink()
    (wheels / "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    done = _gpu_sh("--dry-run", "--wheels", str(wheels), tmp_path=tmp_path)
    assert done.returncode == 2
    assert "wheel bitsandbytes 0.50.2 is missing" in done.stderr
    assert "wheels not in the list" in done.stderr and "torch-2.11.0" in done.stderr
    assert "bash benchmarks/gpu.sh --fetch-wheels" in done.stderr and "Traceback" not in done.stderr


def test_pinned_wheels_are_in_the_tested_range() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    ranges = {Requirement(line.strip().strip('",')).name: Requirement(line.strip().strip('",')).specifier
              for line in text.split("dependencies = [", 1)[1].split("]", 1)[0].splitlines() if line.strip()}
    pinned = dict(gpu_proof.WHEELS)
    for name in ("transformers", "peft", "bitsandbytes", "datasets", "seqeval", "pydantic"):
        assert ranges[name].contains(pinned[name]), name


def test_tiny_fixtures_build_offline_and_every_cell_validates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fixtures = tmp_path / "fixtures"
    gpu_fixtures.build(fixtures, tiny=True, say=lambda line: None)
    assert sorted(p.name for p in fixtures.iterdir()) == sorted([*gpu_fixtures.fixture_files(), gpu_fixtures.MANIFEST])
    config = json.loads((fixtures / "qwen2.5-7b-2l" / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 2 and config["model_type"] == "qwen2"
    rows = (fixtures / gpu_fixtures.SFT).read_text(encoding="utf-8").splitlines()
    assert len(rows) == gpu_fixtures.ROWS and set(json.loads(rows[0])) == {"prompt", "response"}
    before = {p: p.stat().st_mtime_ns for p in fixtures.rglob("*")}
    gpu_fixtures.build(fixtures, tiny=True, say=lambda line: None)  # built once, then kept
    assert {p: p.stat().st_mtime_ns for p in fixtures.rglob("*") if p.name != gpu_fixtures.MANIFEST} == \
        {p: t for p, t in before.items() if p.name != gpu_fixtures.MANIFEST}

    wheels = _fake_wheels(tmp_path / "wheels")
    assert gpu_proof.check(fixtures, tiny=True, wheels=wheels) == 0
    assert "every cell's recipe validates against them" in capsys.readouterr().out
    assert gpu_proof.check(fixtures, tiny=False, wheels=wheels) == 2  # a full run refuses tiny fixtures
    assert "are tiny; this run wants full-size" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="holds tiny fixtures"):
        gpu_fixtures.build(fixtures, tiny=False)


@pytest.mark.slow
def test_a_tiny_ab_arm_runs_on_a_cpu(tmp_path: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    fixtures = tmp_path / "fixtures"
    gpu_fixtures.build(fixtures, tiny=True, say=lambda line: None)
    results_md = tmp_path / "RESULTS.md"
    assert gpu_proof.run(tmp_path / "out", fixtures, quick=True, tiny=True, only=["ab-upcast"], rows=results_md) == 0
    out = capsys.readouterr().out
    assert "ab-upcast" in out and "| ok" in out and "not a full run" in out and not results_md.exists()
    result = json.loads((tmp_path / "out" / "cells" / "ab-upcast.json").read_text(encoding="utf-8"))
    assert result["qlora_prep"]["mode"] == "upcast" and result["qlora_prep"]["dtypes"]["frozen"]["4bit-packed"] > 0
    assert result["qlora_prep"]["dtypes"]["frozen"].get("float32")  # the upcast arm upcasts
    assert result["speed"]["median_step_seconds"] > 0 and "ms/step (median)" in out


def test_a_cpu_cell_on_a_gpu_machine_reports_its_private_memory() -> None:
    """The TF-IDF baseline fits on the CPU: on a GPU machine its peak is private memory, not the GPU's zero."""
    from peftkit.bench.cell import measured_memory

    class Sampler:
        @staticmethod
        def summary() -> dict:
            return {"cuda_allocated_peak_bytes": 0, "cuda_allocated_peak_phase": "train",
                    "private_peak_bytes": 279 * 2**20, "private_peak_phase": "train"}

    assert measured_memory(Sampler())["measure"] == "cuda_allocated"  # type: ignore[arg-type]
    memory = measured_memory(Sampler(), cpu_only=True)  # type: ignore[arg-type]
    assert (memory["device"], memory["measure"], memory["peak_bytes"]) == ("cpu", "private", 279 * 2**20)
