"""The NaN / inf loss guard: with a fused optimizer it costs no host sync per step (read back at logging / save /
train end) and a flagged step is skipped on device; other optimizers keep the per-step check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers.trainer
from safetensors.torch import load_file

import peftkit
from peftkit.cli import main
from peftkit.training.trainer import PeftkitTrainer

BASE = {"train.batch_size": 4, "data.max_train_samples": 24, "train.save_strategy": "no",
        "train.eval_strategy": "no", "method.dropout": 0.0, "train.scheduler": "constant", "train.warmup": 0}
SYNCS = ("item", "__float__", "tolist", "__bool__", "__int__")


def _count_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each tensor read back to the host by peftkit's code or the Trainer's loop itself (not by the model or the
    sampler) while training runs: on a GPU each is a device sync."""
    seen: list[str] = []
    counting = [False]
    ours = (str(Path(peftkit.__file__).parent), str(Path(transformers.trainer.__file__)))
    for name in SYNCS:
        inner = getattr(torch.Tensor, name)

        def wrapped(self, *args, _inner=inner, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if counting[0] and caller.startswith(ours):
                seen.append(f"{_name} {caller}:{sys._getframe(1).f_lineno}")
            return _inner(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    train = PeftkitTrainer._inner_training_loop

    def loop(self, *args, **kwargs):
        counting[0] = True
        try:
            return train(self, *args, **kwargs)
        finally:
            counting[0] = False

    monkeypatch.setattr(PeftkitTrainer, "_inner_training_loop", loop)
    return seen


def _train_counting(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: int, optim: str) -> int:
    seen = _count_syncs(monkeypatch)
    run = tmp_path / f"run-{steps}-{optim}"
    recipe = write_recipe({**BASE, "output_dir": str(run), "train.max_steps": steps,
                           "train.logging_steps": 100, "train.optim": optim})
    assert main(["train", str(recipe)]) == 0
    monkeypatch.undo()
    return len(seen)


def test_fused_adamw_adds_no_host_sync_per_step(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = _train_counting(write_recipe, tmp_path, monkeypatch, 2, "adamw_torch_fused")
    long = _train_counting(write_recipe, tmp_path, monkeypatch, 10, "adamw_torch_fused")
    assert long == short, f"{long - short} host syncs for 8 more steps with one log: one per step is back"
    assert short <= 3, "train end: the last log's read-back, the Trainer's own loss total, the final flush"
    per_step = _train_counting(write_recipe, tmp_path, monkeypatch, 10, "adamw_torch")
    assert per_step >= short + 8, "a non-fused AdamW keeps the per-step check"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(run.rglob("adapter_model.safetensors"))))


@pytest.mark.parametrize("optim", ["adamw_torch_fused", "adamw_torch"])
def test_nan_at_step_k_is_skipped_and_named(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture, optim: str) -> None:
    k = 4
    good = tmp_path / "good"
    assert main(["train", str(write_recipe({**BASE, "output_dir": str(good), "train.max_steps": k - 1,
                                            "train.optim": optim}))]) == 0
    inner = PeftkitTrainer.compute_loss

    def poisoned(self, *args, **kwargs):
        loss = inner(self, *args, **kwargs)
        return loss * float("nan") if self.state.global_step == k - 1 and self.model.training else loss

    trainers: list[PeftkitTrainer] = []
    init = PeftkitTrainer.__init__

    def remember(self, *args, **kwargs):
        init(self, *args, **kwargs)
        trainers.append(self)

    monkeypatch.setattr(PeftkitTrainer, "__init__", remember)
    monkeypatch.setattr(PeftkitTrainer, "compute_loss", poisoned)
    bad = tmp_path / "bad"
    logging = k + 2
    recipe = write_recipe({**BASE, "output_dir": str(bad), "train.max_steps": k + 3, "train.logging_steps": logging,
                           "train.optim": optim})
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "peftkit: error: " in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert f"training loss became nan at step {k} " in errors[0] and "no checkpoint was saved yet" in errors[0]
    (trainer,) = trainers
    # fused: the flag is read back at the next logging step, the steps in between skipped on device; otherwise
    # the check runs in step k itself
    assert trainer.state.global_step == (logging if optim == "adamw_torch_fused" else k - 1)
    trained = {n.replace(".modules_to_save", "").replace(".default", ""): p.detach()
               for n, p in trainer.model.named_parameters() if p.requires_grad}
    expected = _weights(good)
    assert len(trained) == len(expected)
    for name, value in expected.items():
        match = [v for n, v in trained.items() if n.endswith(name.split("base_model.model.", 1)[-1])]
        assert len(match) == 1 and torch.equal(match[0], value), f"{name} moved after step {k - 1}"


def test_train_loss_is_the_mean_of_the_step_losses(write_recipe, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    losses: list[float] = []
    inner = PeftkitTrainer.training_step

    def step(self, *args, **kwargs):
        loss = inner(self, *args, **kwargs)
        losses.append(loss.detach().double().item())
        return loss

    monkeypatch.setattr(PeftkitTrainer, "training_step", step)
    run = tmp_path / "run"
    recipe = write_recipe({**BASE, "output_dir": str(run), "train.max_steps": 6, "train.logging_steps": 4,
                           "train.grad_accum": 2, "train.optim": "adamw_torch_fused"})
    assert main(["train", str(recipe)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(losses) == 12
    assert metrics["train"]["loss"] == pytest.approx(sum(losses) / 6, rel=1e-9)
