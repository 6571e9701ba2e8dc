"""`peftkit.train`: a recipe trained, evaluated and saved as a run directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peftkit.config.load import load_recipe
from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.hardware import device as devices
from peftkit.model.params import count_parameters
from peftkit.rundir import ownership
from peftkit.rundir.checkpoints import resume_point
from peftkit.rundir.destination import check_destination, prepare_output_dir, run_inputs
from peftkit.rundir.layout import CHECKPOINTS_DIR, GATHERED_DIR
from peftkit.rundir.metrics import split_metrics
from peftkit.rundir.save import save_run_or_rescue
from peftkit.training import distributed, tracking
from peftkit.training.build import Prepared, build_trainer
from peftkit.training.guards import InterruptGuard, out_of_memory_hint


@dataclass
class RunResult:
    """What `peftkit.train` returns: where the run is and what it measured."""

    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def train(recipe: Recipe | str | Path, overwrite: bool = False, callbacks: Sequence[TrainerCallback] = (),
          protect: Sequence[str | Path] = (), **overrides: Any) -> RunResult:
    """Train and evaluate a recipe (a Recipe, a name or a YAML path) with dotted-key overrides.

    ``peftkit.train("sentiment-lora", **{"train.epochs": 2})`` returns the metrics and the run directory.
    ``callbacks`` are added to the Trainer. ``protect``: files (the recipe) whose directory ``overwrite``
    must never delete in, besides the data and model the recipe names.
    """
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
    checkpoint = resume_point(output_dir, output_dir / CHECKPOINTS_DIR, recipe.train.resume, overwrite, clean=main)
    if checkpoint is None:  # check now, delete / create only once the recipe, data and model have loaded
        check_destination(output_dir, overwrite, "run", "output_dir", inputs, locked=main)
    prepared = build_trainer(recipe, output_dir)
    lock = prepare_output_dir(output_dir, overwrite, inputs, resume=checkpoint is not None) if main else None
    try:
        return _train_and_save(recipe, prepared, output_dir, checkpoint, callbacks)
    finally:
        if lock is not None:
            lock.release()


def _train_and_save(recipe: Recipe, prepared: Prepared, output_dir: Path, checkpoint: Path | None,
                    callbacks: Sequence[TrainerCallback]) -> RunResult:
    t = recipe.train
    trainer, tokenized = prepared.trainer, prepared.tokenized
    recipe.task.labels = prepared.label_names
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
    interrupt.raise_if_interrupted(trainer.state, output_dir / CHECKPOINTS_DIR)
    train_seconds = time.perf_counter() - started
    test = split_metrics(trainer.evaluate(tokenized["test"], metric_key_prefix="test"), "test")
    test.update(prepared.head.samples(trainer.model, trainer.processing_class, prepared.splits["test"],
                                      recipe.data.max_length))
    trainable, total = count_parameters(trainer.model)
    metrics = {
        "test": test,
        "train": {
            "loss": trainer.run_loss_sum / max(train_output.global_step, 1),
            "seconds": train_seconds,
            "steps": train_output.global_step,
            "samples_per_second": train_output.metrics.get("train_samples_per_second"),
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
    gathered = None
    if distributed.is_sharded(trainer):  # FSDP / DeepSpeed: every rank takes part in gathering the weights
        gathered = output_dir / GATHERED_DIR
        distributed.save_gathered(trainer, gathered)
    if trainer.is_world_process_zero():
        save_run_or_rescue(recipe, trainer, prepared.method, output_dir, metrics, weights=gathered)
    return RunResult(output_dir=output_dir, metrics=metrics)
