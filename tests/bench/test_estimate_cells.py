"""benchmarks/estimate_cells.py: a suite's recorded cells predicted again beside their measured peaks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from testkit import tiny_recipe

from benchmarks import estimate_cells
from peftkit.bench.suite import expand, load_suite
from peftkit.config.load import recipe_from_dict
from peftkit.config.overrides import apply_overrides
from peftkit.hardware import device as devices
from peftkit.hardware.auto import estimate_on

COLUMNS = ("cell", "variant", "status", "measure", "peak_bytes", "predicted_bytes")
MIB = 2**20


def _suite(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"description": "cells", "recipe": tiny_recipe(tiny_bert, sentiment_csv),
                                    "variants": {"lora": {}, "full": {"method": {"name": "full"}}},
                                    "grid": {"train.seed": [1, 2]}}), encoding="utf-8")
    return path


def _results(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def _predicted(suite: Path, cell_id: str, device: devices.Device, overrides: dict | None = None) -> int:
    cell = next(c for c in expand(load_suite(suite)) if c.id == cell_id)
    return estimate_on(recipe_from_dict(apply_overrides(cell.recipe, overrides or {})), device).total


def test_gpu_and_cpu_cells_are_predicted_beside_their_measurements(tmp_path, tiny_bert, sentiment_csv,
                                                                     capsys) -> None:
    suite = _suite(tmp_path, tiny_bert, sentiment_csv)
    gpu_total = _predicted(suite, "lora-seed1", devices.Device("cuda", "gpu", 24 * 2**30, (8, 0)))
    cpu_total = _predicted(suite, "full-seed1", devices.current())
    results = _results(tmp_path / "results.csv", [
        ("lora-seed1", "lora", "ok", "cuda_allocated", 100 * MIB, 150 * MIB),
        ("lora-seed2", "lora", "ok", "cuda_allocated", gpu_total, gpu_total),
        ("full-seed1", "full", "ok", "private", cpu_total, 150 * MIB),
        ("tfidf-seed1", "tfidf", "ok", "private", 5 * MIB, ""),  # a baseline has no prediction
    ])
    assert estimate_cells.main([str(suite), str(results), "--gpu-gib", "24", "--capability", "8.0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["lora-seed1", "lora-seed2", "full-seed1"]
    assert lines[0].startswith("lora-seed1: measured 100 MiB (cuda_allocated); recorded estimate 150 (+50 %)")
    assert f"this checkout {gpu_total / MIB:,.0f} ({100 * (gpu_total - 100 * MIB) / (100 * MIB):+.0f} %)" in lines[0]
    assert f"this checkout {cpu_total / MIB:,.0f} (+0 %)" in lines[2]
    within = 2 + (abs(gpu_total - 100 * MIB) <= 15 * MIB)  # lora-seed2 and full-seed1 are exact
    assert lines[-1] == f"{within} of 3 cells within ±15 %"


def test_overrides_reach_every_cell(tmp_path, tiny_bert, sentiment_csv, capsys) -> None:
    """A run made under another default is predicted with it: KEY=VALUE applies to every cell's recipe."""
    suite = _suite(tmp_path, tiny_bert, sentiment_csv)
    gpu = devices.Device("cuda", "gpu", 24 * 2**30, (8, 0))
    larger = _predicted(suite, "lora-seed1", gpu, {"train.batch_size": 1024})
    assert larger > _predicted(suite, "lora-seed1", gpu) + MIB
    results = _results(tmp_path / "results.csv", [("lora-seed1", "lora", "ok", "cuda_allocated", larger, 1)])
    assert estimate_cells.main([str(suite), str(results), "train.batch_size=1024", "--gpu-gib", "24",
                                "--capability", "8.0"]) == 0
    assert f"this checkout {larger / MIB:,.0f} (+0 %)" in capsys.readouterr().out


def test_results_without_a_cell_of_the_suite_are_refused(tmp_path, tiny_bert, sentiment_csv, capsys) -> None:
    suite = _suite(tmp_path, tiny_bert, sentiment_csv)
    results = _results(tmp_path / "results.csv", [("other-seed1", "other", "ok", "cuda_allocated", 1, 1)])
    assert estimate_cells.main([str(suite), str(results)]) == 2
    assert "no cell of" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("description: x\nquick_run: true\n", encoding="utf-8")
    assert estimate_cells.main([str(tmp_path / "bad.yaml"), str(results)]) == 2
    assert capsys.readouterr().err.startswith("estimate_cells: ")
    assert estimate_cells.main([str(suite), str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"estimate_cells: {tmp_path / 'missing.csv'}: no such file"
    with pytest.raises(SystemExit) as usage:
        estimate_cells.main([str(suite), str(results), "--capability", "x"])
    assert usage.value.code == 2 and "'x': expected MAJOR.MINOR" in capsys.readouterr().err
