"""benchmarks/gpu/estimate_proof_cells.py: the GPU proof's logged peaks beside this checkout's predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.gpu import estimate_proof_cells

LOG_LINES = [
    "  NVIDIA H200 [cuda (sm 9.0)]: 139.8 GiB, native bf16",
    "full-bf16         bf16, adamw_torch_fused, sdpa, checkpointing off | 2,671 tokens/s | peak 3.2 GiB allocated, "
    "3.9 GiB reserved | predicted 3.5 GiB | ok",
    "oom               bf16, adamw_torch_fused, sdpa, checkpointing off | - tokens/s | peak 132.7 GiB allocated, "
    "137.9 GiB reserved | predicted 352.5 GiB | out of memory",
]


def test_the_logged_cells_that_trained_are_read() -> None:
    log = estimate_proof_cells.ROOT / "benchmarks" / "gpu" / "proof-h200.log"
    peaks = estimate_proof_cells.measured_peaks(log)
    assert peaks["lora-bf16"] == 6.6 and peaks["fp16-older"] == 1.8 and "oom" not in peaks


@pytest.mark.slow
def test_a_logged_cell_is_predicted_for_the_gpu(tmp_path: Path, capsys) -> None:
    log = tmp_path / "proof.log"
    log.write_text("\n".join(LOG_LINES) + "\n", encoding="utf-8")
    assert estimate_proof_cells.main([str(log)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("full-bf16: measured 3.2 GiB allocated, this checkout ")
    predicted = float(lines[0].split("this checkout ")[1].split(" GiB")[0])
    error = int(lines[0].rsplit("(", 1)[1].split(" %")[0])
    assert abs(error - 100 * (predicted - 3.2) / 3.2) <= 1  # printed to 2 decimals
    assert lines[1] == f"{int(abs(error) <= 15)} of 1 cells within ±15 %"
    (tmp_path / "empty.log").write_text("nothing\n", encoding="utf-8")
    assert estimate_proof_cells.main([str(tmp_path / "empty.log")]) == 2
    assert estimate_proof_cells.main([str(tmp_path / "missing.log")]) == 2
