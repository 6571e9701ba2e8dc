"""`peftkit train --nproc 2`: two CPU processes (gloo) give the single-process result and one copy of the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testkit import TORCHRUN

import peftkit
from peftkit.cli import main
from peftkit.config.load import load_recipe
from peftkit.config.sections import DistributedSection
from peftkit.errors import PeftkitError
from peftkit.training.distributed import launch_args, training_kwargs

#: Stated tolerances. Two processes sum the same gradients in another order (gloo all-reduce), so weights
#: differ in the last float32 bits (measured: 4e-6 at most on weights of size up to 0.07).
WEIGHT_ATOL = 1e-4
LOSS_RTOL = 1e-6


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "peftkit", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
@TORCHRUN
def test_two_processes_match_one_with_the_same_global_batch(write_recipe, tmp_path: Path) -> None:
    """torchrun (slow tier). The tiny BERT has no dropout: each rank would draw other masks than one process.
    15 steps of 16 stay inside the first epoch (280 training rows); 80 test rows split evenly into eval batches.
    fp32: bf16 autocast (auto on a CPU with native bf16) rounds a batch of 8 and one of 16 differently."""
    recipe = write_recipe({"method.dropout": 0.0, "train.max_steps": 15, "train.eval_batch_size": 20,
                           "train.precision": "fp32"})
    one = peftkit.train(recipe, **{"output_dir": str(tmp_path / "one")})
    before = set(tmp_path.iterdir())

    proc = run_cli("train", str(recipe), "train.batch_size=8", "--output-dir", str(tmp_path / "two"), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run saved to") == 1, proc.stdout  # only rank 0 reports

    two = tmp_path / "two"
    assert set(tmp_path.iterdir()) - before == {two}
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.output_dir.iterdir())
    metrics = json.loads((two / "metrics.json").read_text())
    assert (one.metrics["train"]["processes"], metrics["train"]["processes"]) == (1, 2)
    assert metrics["train"]["steps"] == one.metrics["train"]["steps"] == 15

    single_losses = [entry["loss"] for entry in one.metrics["loss_history"]]
    assert [entry["loss"] for entry in metrics["loss_history"]] == pytest.approx(single_losses, rel=LOSS_RTOL)
    assert metrics["train"]["loss"] == pytest.approx(one.metrics["train"]["loss"], rel=LOSS_RTOL)
    assert single_losses[-1] < single_losses[0]

    # test metrics are gathered from both ranks' predictions: the same 80 examples, the same confusion matrix
    assert metrics["test"]["confusion_matrix"] == one.metrics["test"]["confusion_matrix"]
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 80
    assert metrics["test"]["loss"] == pytest.approx(one.metrics["test"]["loss"], rel=LOSS_RTOL)

    single = load_file(one.output_dir / "adapter_model.safetensors")
    double = load_file(two / "adapter_model.safetensors")
    assert single.keys() == double.keys()
    trained = max(single[k].abs().max().item() for k in single if "lora_B" in k)  # lora_B starts at zero
    assert trained > 100 * WEIGHT_ATOL  # training moved the weights far more than the tolerance
    for key in single:
        torch.testing.assert_close(double[key], single[key], atol=WEIGHT_ATOL, rtol=0)


@pytest.mark.slow
@TORCHRUN
def test_worker_errors_stop_the_launch_with_exit_2(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe({"data.text_column": "sentence"})
    proc = run_cli("train", str(recipe), "--nproc", "2")
    assert proc.returncode == 2
    assert "column 'sentence' (data.text_column) not found" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "peftkit: error: train --nproc 2: a worker process failed (exit code 2); its error is printed above"
    )
    assert "Traceback" not in proc.stderr


def test_existing_output_is_refused_before_any_process_starts(write_recipe, tmp_path: Path, capsys) -> None:
    recipe = write_recipe()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    assert main(["train", str(recipe), "--nproc", "2"]) == 2  # refused in this process: nothing launched
    assert capsys.readouterr().err.strip().splitlines() == [
        f"peftkit: error: output_dir '{tmp_path / 'run'}' is not empty; choose another (output_dir=runs/new) "
        "or pass --overwrite"
    ]
    assert (tmp_path / "run" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("overrides", [{"train.max_steps": 2}, {"data.text_column": "sentence"}],
                         ids=["trained", "refused"])
def test_train_command_shuts_its_process_group_down(write_recipe, tmp_path: Path, overrides: dict) -> None:
    """What a torchrun worker's `peftkit train` does last, whether it trained or failed: a gloo group left to
    interpreter finalization can abort the worker (SIGABRT, "terminate called without an active exception")."""
    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        code = main(["train", str(write_recipe(overrides)), "--output-dir", str(tmp_path / "run"), "--quiet"])
        assert (code, dist.is_initialized()) == (2 if "data.text_column" in overrides else 0, False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_workers_train_command_reports_then_leaves_without_finalization(write_recipe, tmp_path: Path, capsys,
                                                                           monkeypatch) -> None:
    """A launcher's worker ends in leave_worker once the main process has printed its report."""
    from peftkit.training import distributed

    class Left(Exception):
        pass

    def leave() -> None:
        raise Left(capsys.readouterr().out)

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "leave_worker", leave)
    with pytest.raises(Left) as left:
        main(["train", str(write_recipe({"train.max_steps": 2})), "--output-dir", str(tmp_path / "run")])
    assert f"run saved to {tmp_path / 'run'}" in str(left.value)


def test_leave_worker_flushes_its_output_and_skips_finalization() -> None:
    """What finalization would run (an atexit hook here) does not; what was printed is not lost in the buffer."""
    code = ("import atexit; from peftkit.training.distributed import leave_worker; "
            "atexit.register(print, 'finalized'); print('report', end=''); leave_worker()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "report")


def test_launch_hands_off_to_torchrun() -> None:
    assert launch_args(4, ["train", "r.yaml", "--overwrite"]) == [
        "--standalone", "--nproc-per-node=4", "--module", "peftkit", "train", "r.yaml", "--overwrite"
    ]


def test_deepspeed_settings_pass_through(tmp_path: Path) -> None:
    zero = tmp_path / "zero2.json"
    zero.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(PeftkitError, match=r"'distributed.deepspeed' needs the deepspeed package"):
            training_kwargs(DistributedSection(deepspeed=str(zero)))
    else:
        assert training_kwargs(DistributedSection(deepspeed=str(zero)))["deepspeed"] == str(zero)


@pytest.mark.parametrize(("section", "message"), [
    ({"distributed": {"fsdp": True, "deepspeed": {"zero_optimization": {"stage": 3}}}},
     "'distributed.fsdp' and 'distributed.deepspeed' exclude each other"),
    ({"distributed": {"deepspeed": "missing.json"}}, "'distributed.deepspeed': file 'missing.json' does not exist"),
    ({"distributed": {"fsdp": True}, "method.name": "qlora", "quantization.mode": "4bit"},
     "'quantization.quant_storage': FSDP shards 4-bit weights only when they are stored in model.dtype; "
     "set quantization.quant_storage: float32"),
    ({"distributed": {"backend": "tcp"}}, "'distributed.backend'"),
])
def test_bad_distributed_settings_name_the_key(write_recipe, section: dict, message: str) -> None:
    with pytest.raises(PeftkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(write_recipe(section))
