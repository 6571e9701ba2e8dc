"""`peftkit.train`: a recipe trained, evaluated and saved as a run directory."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import Trainer, TrainerCallback

from peftkit.config.load import load_recipe
from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.hardware import device as devices
from peftkit.model.params import count_parameters
from peftkit.quiet import library_noise_filtered
from peftkit.rundir import ownership
from peftkit.rundir.checkpoints import finished_training, remove_checkpoint, resume_point
from peftkit.rundir.destination import check_destination, prepare_output_dir, run_inputs
from peftkit.rundir.layout import CHECKPOINTS_DIR, GATHERED_DIR
from peftkit.rundir.metrics import split_metrics
from peftkit.rundir.progress import ProgressTable, replace_printing
from peftkit.rundir.save import save_run_or_rescue
from peftkit.training import distributed, tracking
from peftkit.training.build import Prepared, build_trainer
from peftkit.training.guards import (
    InterruptGuard,
    OutOfGpuMemory,
    TrainingInterrupted,
    out_of_memory_hint,
    saving_first,
)
from peftkit.training.header import header_lines


@dataclass
class RunResult:
    """What `peftkit.train` returns: where the run is and what it measured."""

    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def train(recipe: Recipe | str | Path, overwrite: bool = False, callbacks: Sequence[TrainerCallback] = (),
          protect: Sequence[str | Path] = (), quiet: bool = False, name: str | None = None,
          **overrides: Any) -> RunResult:
    """Train and evaluate a recipe (a Recipe, a name or a YAML path) with dotted-key overrides.

    ``peftkit.train("sentiment-lora", **{"train.epochs": 2})`` returns the metrics and the run directory.
    ``callbacks`` are added to the Trainer. ``protect``: files (the recipe) whose directory ``overwrite``
    must never delete in, besides the data and model the recipe names. ``quiet``: no header, training bars or
    log table; ``name``: the recipe's name in the header (by default its file's or catalogue name).
    """
    if name is None:
        name = "" if isinstance(recipe, Recipe) else Path(recipe).stem
    with library_noise_filtered():
        return _load_and_train(recipe, overwrite, callbacks, protect, quiet, name, overrides)


def _load_and_train(recipe: Recipe | str | Path, overwrite: bool, callbacks: Sequence[TrainerCallback],
           protect: Sequence[str | Path], quiet: bool, name: str, overrides: dict[str, Any]) -> RunResult:
    if not isinstance(recipe, Recipe):
        protect = [*protect, recipe] if Path(recipe).is_file() else protect
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise PeftkitError("overrides apply to a recipe name or file, not to a Recipe object; edit it instead")
    output_dir = Path(recipe.output_dir or "runs/run")
    inputs = [*protect, *run_inputs(recipe)]
    main = distributed.is_main_process()
    if main and output_dir.is_dir():
        ownership.check_unlocked(output_dir)  # fail at once, before loading anything
    left = recipe.train.resume != "never" and output_dir.is_dir() and any(output_dir.iterdir())  # what a run left
    checkpoint = resume_point(output_dir, output_dir / CHECKPOINTS_DIR, recipe.train.resume, overwrite, clean=main)
    if checkpoint is None:  # check now, delete / create only once the recipe, data and model have loaded
        check_destination(output_dir, overwrite, "run", "output_dir", inputs, locked=main)
    prepared = build_trainer(recipe, output_dir)
    lock = prepare_output_dir(output_dir, overwrite, inputs, resume=checkpoint is not None) if main else None
    if left and checkpoint is None and main:
        print(f"peftkit: no complete checkpoint in '{output_dir}' to resume from; training from the start",
              file=sys.stderr, flush=True)
    header = header_lines(name, recipe, prepared.trainer.model, prepared.tokenized, prepared.resolved, output_dir)
    t, world = recipe.train, prepared.trainer.args.world_size
    replace_printing(prepared.trainer, ProgressTable(header, prepared.head.main_metric, show=main and not quiet,
                                                     samples_per_step=t.batch_size * t.grad_accum * world))
    try:
        return _train_and_save(recipe, prepared, output_dir, checkpoint, callbacks)
    finally:
        if lock is not None:
            lock.release()


def _train_and_save(recipe: Recipe, prepared: Prepared, output_dir: Path, checkpoint: Path | None,
                    callbacks: Sequence[TrainerCallback]) -> RunResult:
    trainer = prepared.trainer
    recipe.task.labels = prepared.label_names
    if checkpoint is not None and finished_training(checkpoint):
        print(f"peftkit: training had finished ({checkpoint}); evaluating and saving it without training again",
              file=sys.stderr, flush=True)
        final, figures = checkpoint, trainer.restore_trained(checkpoint)
    else:
        figures = _train(recipe, trainer, checkpoint, callbacks, output_dir / CHECKPOINTS_DIR)
        final = _keep_trained(trainer, figures, output_dir)
    try:
        metrics = _evaluate(recipe, prepared, figures, final)
        gathered = None
        if distributed.is_sharded(trainer):  # FSDP / DeepSpeed: every rank takes part in gathering the weights
            gathered = output_dir / GATHERED_DIR
            trainer.save_model(str(gathered))
        if trainer.is_world_process_zero():  # a failure names the rescue folder or the kept checkpoint
            with saving_first():
                save_run_or_rescue(recipe, trainer, prepared.method, output_dir, metrics, weights=gathered)
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"stopped by Ctrl-C after training finished (step {trainer.state.global_step}) "
                                  f"before the run was saved; {_kept_trained(final)}") from None
    if final is not None and figures.get("transient") and trainer.is_world_process_zero():
        remove_checkpoint(final)  # written only to keep the trained model until the run was saved
    return RunResult(output_dir=output_dir, metrics=metrics)


def _train(recipe: Recipe, trainer: Trainer, checkpoint: Path | None, callbacks: Sequence[TrainerCallback],
           checkpoints_dir: Path) -> dict[str, Any]:
    """Train (from ``checkpoint`` when resuming); Ctrl-C stops it after a step. Returns the training's seconds and
    samples per second."""
    t = recipe.train
    interrupt = InterruptGuard()
    trainer.add_callback(interrupt)
    for callback in callbacks:  # e.g. the benchmark's memory probe
        trainer.add_callback(callback)
    started = time.perf_counter()
    try:
        with out_of_memory_hint(t.batch_size, t.grad_accum, recipe.data.max_length):
            train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        interrupt.restore()
    interrupt.raise_if_interrupted(trainer.state, checkpoints_dir)
    return {"seconds": time.perf_counter() - started,
            "samples_per_second": train_output.metrics.get("train_samples_per_second")}


def _keep_trained(trainer: Trainer, figures: dict[str, Any], output_dir: Path) -> Path | None:
    """The checkpoint that keeps the trained model until the run is saved; None when it cannot be written (a full
    disk, or output_dir moved or replaced meanwhile: the run is still evaluated, and its save says where it went)."""
    lock = ownership.DirectoryLock.held(output_dir)
    try:
        return trainer.keep_trained(figures, check=lock.check_unchanged if lock is not None else None)
    except (OSError, SafetensorError, ownership.DestinationChanged):
        return None


def _kept_trained(final: Path | None) -> str:
    if final is None:
        return ("the trained model could not be kept as a checkpoint either (a full disk?): free some space and run "
                "the same `peftkit train` command with --resume (it continues from the last checkpoint, if any)")
    return (f"the trained model is kept in '{final}': run the same `peftkit train` command with --resume to "
            "evaluate and save it without training again")


def _evaluate(recipe: Recipe, prepared: Prepared, figures: dict[str, Any], final: Path | None) -> dict[str, Any]:
    """The run's metrics: the test split evaluated, the training's figures and loss history. A failure is one
    line naming the checkpoint that keeps the trained model."""
    trainer, tokenized = prepared.trainer, prepared.tokenized
    try:
        test = split_metrics(trainer.evaluate(tokenized["test"], metric_key_prefix="test"), "test")
        test.update(prepared.head.samples(trainer.model, trainer.processing_class, prepared.splits["test"],
                                          recipe.data.max_length))
    except PeftkitError as exc:
        raise PeftkitError(f"{exc}; {_kept_trained(final)}") from exc
    except torch.OutOfMemoryError as exc:
        raise OutOfGpuMemory(f"out of GPU memory in the final test evaluation with train.eval_batch_size="
                             f"{recipe.train.eval_batch_size}; lower it; {_kept_trained(final)}") from exc
    except Exception as exc:  # the trained model must not be lost to a failure here, whatever it is
        raise PeftkitError(f"the final test evaluation failed ({type(exc).__name__}: {exc}); "
                           f"{_kept_trained(final)}") from exc
    trainable, total = count_parameters(trainer.model)
    steps = trainer.state.global_step
    metrics = {
        "test": test,
        "train": {
            "loss": trainer.run_loss_sum / max(steps, 1),
            "seconds": figures["seconds"],
            "steps": steps,
            "samples_per_second": figures["samples_per_second"],
            "examples": len(tokenized["train"]),
            "input_tokens": sum(map(len, tokenized["train"]["input_ids"])),
            "processes": trainer.args.world_size,
        },
        "loss_history": [
            {"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e
        ],
        "parameters": {"trainable": trainable, "total": total, "trainable_percent": 100 * trainable / total},
        "test_examples": len(tokenized["test"]),
        "device": devices.current().label,
        "resolved": prepared.resolved,
    }
    tracking.finish(trainer, metrics)
    return metrics
