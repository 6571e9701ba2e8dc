"""benchmarks/estimate_gpu_cells.py: a suite's GPU cells predicted again on a machine without CUDA."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml
from testkit import tiny_recipe

from benchmarks import estimate_gpu_cells
from peftkit.bench.suite import expand, load_suite
from peftkit.config.load import recipe_from_dict
from peftkit.hardware.auto import estimate_on
from peftkit.hardware.device import Device

COLUMNS = ("cell", "variant", "status", "measure", "peak_bytes", "predicted_bytes")


def _suite(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"description": "gpu cells", "recipe": tiny_recipe(tiny_bert, sentiment_csv),
                                    "variants": {"lora": {}, "full": {"method": {"name": "full"}}},
                                    "grid": {"train.seed": [1, 2]}}), encoding="utf-8")
    return path


def _results(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def test_each_variant_is_predicted_for_the_gpu_beside_its_measurement(tmp_path, tiny_bert, sentiment_csv,
                                                                       capsys) -> None:
    suite = _suite(tmp_path, tiny_bert, sentiment_csv)
    results = _results(tmp_path / "results.csv", [
        ("lora-seed1", "lora", "ok", "cuda_allocated", 100 * 2**20, 150 * 2**20),
        ("lora-seed2", "lora", "ok", "cuda_allocated", 100 * 2**20, 150 * 2**20),
        ("full-seed1", "full", "ok", "private", 100 * 2**20, 150 * 2**20),  # measured on a CPU: not this tool's
    ])
    assert estimate_gpu_cells.main([str(suite), str(results), "24", "8.0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cell = next(c for c in expand(load_suite(suite)) if c.id == "lora-seed1")
    expected = estimate_on(recipe_from_dict(cell.recipe), Device("cuda", "gpu", 24 * 2**30, (8, 0))).total
    assert len(lines) == 1 and lines[0].startswith("lora-seed1: measured 100 MiB; recorded estimate 150 (+50 %)")
    assert f"this checkout {expected / 2**20:,.0f} ({100 * (expected - 100 * 2**20) / (100 * 2**20):+.0f} %)" \
        in lines[0]


def test_results_without_a_gpu_cell_of_the_suite_are_refused(tmp_path, tiny_bert, sentiment_csv, capsys) -> None:
    suite = _suite(tmp_path, tiny_bert, sentiment_csv)
    results = _results(tmp_path / "results.csv", [("other-seed1", "other", "ok", "cuda_allocated", 1, 1)])
    assert estimate_gpu_cells.main([str(suite), str(results)]) == 2
    assert "no cell measured on a CUDA device matches" in capsys.readouterr().out
