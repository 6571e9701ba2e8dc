"""`peftkit train --nproc 2` with `distributed.fsdp`: FSDP2 over two CPU processes (gloo) trains as one process on
the same global batch, saves the full weights once, reloads and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import peftkit
from peftkit.cli import main
from peftkit.config.load import load_recipe
from peftkit.errors import PeftkitError
from peftkit.training.distributed import training_kwargs

#: Two processes reduce-scatter the same gradients in another order (gloo), so losses and weights differ in the
#: last float32 bits only.
LOSS_ATOL = 1e-5
WEIGHT_ATOL = 1e-4


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "peftkit", *args], capture_output=True, text=True, env=env,
                          timeout=400)


def fsdp_pair(write_recipe, tmp_path: Path, overrides: dict) -> tuple:
    """One process with batch 16 and two FSDP processes with batch 8 each, 12 steps; returns both run folders'
    metrics and paths."""
    recipe = write_recipe({"method.dropout": 0.0, "train.max_steps": 12, "train.eval_batch_size": 20, **overrides})
    one = peftkit.train(recipe, **{"output_dir": str(tmp_path / "one")})
    proc = run_cli("train", str(recipe), "train.batch_size=8", "distributed.fsdp=true",
                   "--output-dir", str(tmp_path / "two"), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run saved to") == 1, proc.stdout
    two = tmp_path / "two"
    return one, json.loads((two / "metrics.json").read_text()), two


@pytest.mark.slow
def test_fsdp_lora_matches_one_process(write_recipe, tmp_path: Path) -> None:
    one, metrics, two = fsdp_pair(write_recipe, tmp_path, {})
    assert metrics["train"]["processes"] == 2
    single = [e["loss"] for e in one.metrics["loss_history"]]
    assert [e["loss"] for e in metrics["loss_history"]] == pytest.approx(single, abs=LOSS_ATOL)
    a = load_file(one.output_dir / "adapter_model.safetensors")
    b = load_file(two / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=WEIGHT_ATOL, rtol=0)
