"""benchmarks/vs_trainer.py at smoke size: both sides train on the same CSV rows and the table names each run."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_reference_script_and_peftkit_train_the_same_rows(minilm_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_trainer.py"), "--quick",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {name: re.search(rf"^{re.escape(name)} #1 +([\d.]+) +([\d.]+) +([\d.]+)$", done.stdout, re.M)
            for name in ("trainer+peft", "peftkit")}
    assert all(rows.values()), done.stdout
    for match in rows.values():
        assert float(match[1]) > 0 and 0 <= float(match[3]) <= 1
    assert re.search(r"ratio \d+\.\d\dx$", done.stdout.strip())
    with (tmp_path / "train.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 64
    assert (tmp_path / "reference" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "peftkit" / "metrics.json").is_file()
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert recipe["data"]["files"] == {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")}
    # the reference's work whatever the default recipe says: its model, its LoRA (dropout included), one epoch
    method = {k: recipe["method"][k] for k in ("r", "alpha", "dropout", "target_modules")}
    assert (recipe["model"], method, recipe["train"]["epochs"]) == ({"name": "minilm-l6"}, {
        "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "key", "value", "dense"]}, 1)
