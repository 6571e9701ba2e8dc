"""Guards around a training run: non-finite loss, Ctrl-C (while training and while the run is saved), GPU
out-of-memory.

Each turns a failure into a one-line message that says where the run stopped, what was kept and
what to do next; none of them lets a half-trained model be saved as if it had finished.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from peftkit.errors import PeftkitError
from peftkit.rundir.checkpoints import last_checkpoint

RESUME_HINT = "run the same `peftkit train` command again with --resume (or train.resume=auto)"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run after a step; a checkpoint was saved. The CLI prints the message."""


def _kept(checkpoints_dir: Path) -> str:
    checkpoint = last_checkpoint(checkpoints_dir)
    return f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"


def _nan_message(value: float, step: int, epoch: float, checkpoints_dir: str) -> str:
    return (
        f"training loss became {value} at step {step} (epoch {epoch:.2f}); stopped before the update, "
        f"{_kept(Path(checkpoints_dir))}; lower train.learning_rate or train.max_grad_norm (or use fp32), "
        f"then {RESUME_HINT}"
    )


def check_loss(loss: torch.Tensor, state: TrainerState, checkpoints_dir: str) -> float:
    """The loss as a float; a NaN / inf one stops the run before the optimizer applies it, naming the step
    and the checkpoint kept. One host sync per call: for optimizers :class:`DeferredLossGuard` cannot serve."""
    value = float(loss.detach().float().sum())
    if math.isfinite(value):
        return value
    raise PeftkitError(_nan_message(value, state.global_step + 1, state.epoch or 0, checkpoints_dir))


def skips_on_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` skips its whole update on device when its ``found_inf`` tensor is non-zero (torch's
    fused Adam / AdamW / SGD / Adagrad: the GradScaler contract ``_step_supports_amp_scaling``)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and not hasattr(optimizer, "found_inf")


class DeferredLossGuard:
    """The NaN / inf guard without a host sync per step, for an optimizer that :func:`skips_on_found_inf`.

    Each micro-batch ORs ``~isfinite(loss)`` into the optimizer's ``found_inf`` (so the fused step skips the
    update on device: weights, moments and step count stay as they were, for it and every later step) and adds
    the loss to a device sum; the first bad step is recorded on device. :meth:`flush` reads all of it back in one
    sync, where the Trainer syncs anyway (logging, evaluation, save, train end), and raises :func:`check_loss`'s
    error for the first bad step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer = optimizer
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        # loss sum since the last flush, first bad step (0: none), its epoch, its loss
        self._record = torch.zeros(4, dtype=dtype, device=device)
        optimizer.found_inf = self.found_inf  # type: ignore[attr-defined]
        # after each step the flag resets, unless a bad step was seen: then every later step is skipped as well, so the
        # weights stay those of the step before it until the next read-back stops the run
        self._hook = optimizer.register_step_post_hook(lambda *_: self.found_inf.copy_(self._record[1] != 0))

    def add(self, loss: torch.Tensor, state: TrainerState) -> None:
        """Account one micro-batch's loss (no host sync)."""
        loss = loss.detach().float().sum().to(self._record.dtype)
        bad = ~torch.isfinite(loss)
        self.found_inf.masked_fill_(bad, 1.0)
        first = bad & (self._record[1] == 0)
        self._record[0] += torch.where(bad, 0.0, loss)
        self._record[1].masked_fill_(first, float(state.global_step + 1))
        self._record[2].masked_fill_(first, float(state.epoch or 0))
        self._record[3].copy_(torch.where(first, loss, self._record[3]))

    def flush(self, checkpoints_dir: str) -> float:
        """The loss sum since the last flush (one host sync); raises for a non-finite loss seen since."""
        loss_sum, step, epoch, value = self._record.tolist()
        self._record.zero_()
        if step:
            raise PeftkitError(_nan_message(value, int(step), epoch, checkpoints_dir))
        return loss_sum

    def detach(self) -> None:
        """Give the optimizer back as it was."""
        self._hook.remove()
        if getattr(self.optimizer, "found_inf", None) is self.found_inf:
            del self.optimizer.found_inf  # type: ignore[attr-defined]


class InterruptGuard(TrainerCallback):
    """First Ctrl-C: finish the current step, save a checkpoint, stop. A second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.interrupted = True
        print("peftkit: Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again aborts without saving)",
              file=sys.stderr, flush=True)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the SIGINT handler that was there before training."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def raise_if_interrupted(self, state: TrainerState, checkpoints_dir: Path) -> None:
        """After ``trainer.train()`` returned: a Ctrl-C'd run is not evaluated or saved as finished."""
        if self.interrupted:
            raise TrainingInterrupted(
                f"stopped by Ctrl-C after step {state.global_step}; {_kept(checkpoints_dir)}; to continue, "
                f"{RESUME_HINT}"
            )


class OutOfGpuMemory(PeftkitError):
    """Training ran out of GPU memory; the message names the batch and what to change."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the GPU running out of memory: torch's own error (outside the training loop) or the
    one-line message :func:`out_of_memory_hint` turns it into. Benchmark results are labelled from this."""
    return isinstance(exc, (torch.OutOfMemoryError, OutOfGpuMemory))


@contextmanager
def saving_first() -> Iterator[None]:
    """While the trained run is saved (seconds): a first Ctrl-C lets the save finish, so no half-moved run is left;
    a second one aborts it (the checkpoint kept since training ended still holds the model)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)
        print("peftkit: Ctrl-C: finishing the save of the trained run first (Ctrl-C again aborts it)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def out_of_memory_hint(batch_size: int, grad_accum: int, max_length: int) -> Iterator[None]:
    """Turn a GPU out-of-memory error into a one-line message with the batch size and what to change."""
    try:
        yield
    except torch.OutOfMemoryError:
        smaller = max(batch_size // 2, 1)
        raise OutOfGpuMemory(
            f"out of GPU memory with train.batch_size={batch_size} (grad_accum {grad_accum}, data.max_length "
            f"{max_length}); try train.batch_size={smaller} train.grad_accum={grad_accum * batch_size // smaller}, "
            "train.gradient_checkpointing=true, quantization.mode=4bit, a lower data.max_length, or "
            "train.auto_find_batch_size=true to find the largest batch that fits"
        ) from None
