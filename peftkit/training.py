"""Recipe → head + method + data + model → HF Trainer → a run directory."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from safetensors import SafetensorError
from torch import nn
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from peftkit import device as devices
from peftkit import distributed, ownership, tracking
from peftkit.checkpoints import last_checkpoint, resume_point
from peftkit.data import preprocess
from peftkit.errors import PeftkitError
from peftkit.estimate import padded_length
from peftkit.guards import InterruptGuard, out_of_memory_hint
from peftkit.heads.base import Head
from peftkit.methods.base import Method
from peftkit.modelcard import write_model_card
from peftkit.modeling import check_position_limit, load_base_model, load_tokenizer
from peftkit.optim import layerwise_groups
from peftkit.pipeline import build_splits
from peftkit.recipe import DataSection, ModelSection, Recipe, TrainSection, load_recipe
from peftkit.registry import HEADS, METHODS
from peftkit.regularization import l1_penalty
from peftkit.trainer import PeftkitTrainer

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"
STAGING_DIR = ".staging"
GATHERED_DIR = ".gathered"


@dataclass
class Prepared:
    """A ready Trainer and the pieces it was built from."""

    trainer: Trainer
    tokenized: DatasetDict
    head: Head
    method: Method
    label_names: list[str]
    splits: DatasetDict | None = None  # the standardized text splits the tokenized ones came from
    resolved: dict[str, Any] = field(default_factory=dict)  # the recipe's `auto` options as resolved here


@dataclass
class RunResult:
    """What `peftkit.train` returns: where the run is and what it measured."""

    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def check_device(train: TrainSection, model: ModelSection | None = None) -> None:
    """Refuse settings this machine cannot run, naming the key (`auto` ones are resolved to what it can)."""
    cuda = torch.cuda.is_available()
    if model is not None and model.attn_implementation == "flash_attention_2" and not (
            cuda and devices.flash_attn_installed()):
        raise PeftkitError("'model.attn_implementation': flash_attention_2 needs a CUDA GPU and the flash-attn "
                           "package; use auto or sdpa here")
    if train.precision == "fp16" and not cuda:
        raise PeftkitError("'train.precision': fp16 mixed precision needs a CUDA GPU; use fp32 or bf16 here")
    if train.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise PeftkitError("'train.precision': this GPU has no bf16 support; use fp16 or fp32")
    if train.optim.startswith("paged_") and not cuda:
        raise PeftkitError(
            f"'train.optim': {train.optim} pages optimizer state between GPU and CPU memory and needs a "
            "CUDA GPU; use adamw_bnb_8bit or adamw_torch here"
        )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; packed 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for parameter in model.parameters():
        n = parameter.numel()
        if parameter.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if parameter.requires_grad:
            trainable += n
    return trainable, total


def training_arguments(recipe: Recipe, head: Head, output_dir: Path, has_validation: bool) -> TrainingArguments:
    """Trainer settings from the recipe's `train` section."""
    t = recipe.train
    evaluate = t.eval_strategy if has_validation else "no"
    return TrainingArguments(
        output_dir=str(output_dir / CHECKPOINTS_DIR),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup,
        lr_scheduler_type=t.scheduler,
        lr_scheduler_kwargs=dict(t.scheduler_options),
        label_smoothing_factor=t.label_smoothing,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy=evaluate,
        eval_steps=t.eval_steps,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=bool(t.early_stopping_patience) and evaluate != "no",
        metric_for_best_model=t.metric_for_best_model or head.main_metric,
        logging_steps=t.logging_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        optim=t.optim,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        dataloader_num_workers=t.dataloader_num_workers,
        auto_find_batch_size=t.auto_find_batch_size,
        eval_accumulation_steps=t.eval_accumulation_steps,
        restore_callback_states_from_checkpoint=True,
        report_to=[],
        disable_tqdm=False,  # transformers hides the bars when its log level is above WARN, as the CLI sets it
        use_cpu=not torch.cuda.is_available(),
        **distributed.training_kwargs(recipe.distributed),
    )


def split_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Trainer's `eval_accuracy`-style keys without their prefix."""
    return {k.removeprefix(prefix + "_"): v for k, v in metrics.items()}


#: What a run may write into output_dir besides its final files; recorded in the manifest from the start.
WORKING_ENTRIES = (CHECKPOINTS_DIR, STAGING_DIR, GATHERED_DIR, tracking.LOGS_DIR)


def run_inputs(recipe: Recipe) -> list[str]:
    """The local files a run reads (data, model): ``--overwrite`` never deletes in a directory holding one."""
    paths = [recipe.data.source, *recipe.data.files.values(), recipe.model.name]
    return [p for p in paths if Path(p).expanduser().exists()]


def check_output_dir(path: Path, overwrite: bool, inputs: Sequence[str | Path] = (), locked: bool = True) -> None:
    """Refuse an output_dir that cannot take a new run; creates and deletes nothing.

    Without ``overwrite`` it must be new or empty; with it, a directory peftkit wrote as a run (its
    manifest), never the current directory, the home folder or one holding ``inputs``. ``locked``: also
    fail when another run holds the directory's lock.
    """
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise PeftkitError(f"output_dir '{path}': '{parent}' is a file, not a directory")
    if path.exists() and not path.is_dir():
        raise PeftkitError(f"output_dir '{path}' is a file, not a directory")
    if not path.is_dir():
        return
    if locked:
        ownership.check_unlocked(path)
    if ownership.has_content(path):
        if not overwrite:
            raise PeftkitError(
                f"output_dir '{path}' is not empty; choose another (output_dir=runs/new) or pass --overwrite"
            )
        ownership.check_not_precious(path, "output_dir", inputs)
        manifest = ownership.read_manifest(path)
        if manifest is None or manifest.get("kind") != "run":
            raise PeftkitError(
                f"--overwrite: output_dir '{path}' is not a peftkit run (no {ownership.MANIFEST} written by "
                "peftkit); refusing to delete anything in it — choose a new or empty directory"
            )


def prepare_output_dir(path: Path, overwrite: bool, inputs: Sequence[str | Path] = (),
                       resume: bool = False) -> ownership.DirectoryLock:
    """Create and lock output_dir for this run; ``overwrite`` first removes what an earlier run wrote.

    Only the entries the earlier run's manifest lists are deleted; anything else in the directory is left.
    The returned lock is held until the run has saved (a second run into the directory fails at once).
    """
    path.mkdir(parents=True, exist_ok=True)
    lock = ownership.DirectoryLock(path).acquire()
    try:
        made = path / CHECKPOINTS_DIR  # the Trainer made it empty when it was built; phase 1 saw it absent
        if not resume and made.is_dir() and not any(made.iterdir()):
            made.rmdir()
        if not resume and ownership.has_content(path):  # checked again under the lock: another run may have won
            if not overwrite:
                raise PeftkitError(
                    f"output_dir '{path}' is not empty (another run wrote it meanwhile); choose another "
                    "(output_dir=runs/new) or pass --overwrite"
                )
            ownership.check_not_precious(path, "output_dir", inputs)
            ownership.remove_owned(path, "run", "output_dir")
        ownership.record(path, "run", [n for n in WORKING_ENTRIES if resume or not (path / n).exists()])
    except BaseException:
        lock.release()
        raise
    return lock


def padded_collator(head: Head, tokenizer: Any, data: DataSection, tokenized: DatasetDict) -> Any:
    """The head's collator, padding to a fixed length when ``data.padding`` asks for one."""
    collator = head.collator(tokenizer)
    if data.padding == "dynamic":
        return collator
    if not hasattr(collator, "max_length") or not hasattr(collator, "padding"):
        raise PeftkitError(f"'data.padding': task.head '{head.name}' pads its own way; use data.padding: dynamic")
    length = data.max_length
    if data.padding == "longest_in_dataset":
        length = max(len(ids) for part in tokenized.values() for ids in part["input_ids"])
    collator.padding, collator.max_length = "max_length", length
    return collator


def build_trainer(recipe: Recipe, output_dir: Path) -> Prepared:
    """Everything a run needs, with the seed set before any weight is initialised."""
    tokenizer = load_tokenizer(recipe.model)  # fetches a catalogue model, whose config `auto` attention reads
    device = devices.current()
    resolved = devices.resolve_settings(recipe, device)
    check_device(recipe.train, recipe.model)
    distributed.check_device(recipe.distributed)
    tracking.chosen(recipe.train.report_to)
    head: Head = HEADS.get(recipe.task.head)(recipe.task)
    method: Method = METHODS.get(recipe.method.name)(recipe.method)
    recipe.preprocess = preprocess.resolved(recipe.preprocess)  # stop words saved inline with the run
    data = build_splits(recipe, head, tokenizer)
    tokenized, label_names = data.tokenized, data.label_names
    set_seed(recipe.train.seed)
    model, head_modules = load_base_model(recipe.model, recipe.quantization, head, label_names)
    longest = max(len(ids) for part in tokenized.values() for ids in part["input_ids"])
    check_position_limit(model, recipe.data.max_length if recipe.data.padding == "max_length" else longest,
                         recipe.model.name)
    model = method.apply(model, head_modules, head.task_type)
    resolved.update(devices.resolve_checkpointing(recipe, device, padded_length(tokenized, recipe.data),
                                                  label_names))
    args = training_arguments(recipe, head, output_dir, has_validation=len(tokenized["validation"]) > 0)
    callbacks = [EarlyStoppingCallback(recipe.train.early_stopping_patience)] if args.load_best_model_at_end else []
    callbacks += method.callbacks()
    callbacks += tracking.callbacks(recipe, output_dir)
    trainer = PeftkitTrainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=padded_collator(head, tokenizer, recipe.data, tokenized),
        processing_class=tokenizer,
        compute_metrics=head.compute_metrics(label_names),
        callbacks=callbacks,
        loss_fn=head.loss_fn(label_names, tokenized["train"]),
        penalties=[l1_penalty(recipe.train.l1)] if recipe.train.l1 else [],
        param_groups=None if recipe.train.layerwise_lr_decay is None else layerwise_groups(
            recipe.train.layerwise_lr_decay, args.learning_rate, args.weight_decay),
        **head.trainer_kwargs(),
    )
    # transformers multiplies the loss by the process count for models whose forward takes **kwargs, assuming
    # it was divided by the global item count; classification models take **kwargs but return a plain mean.
    trainer.model_accepts_loss_kwargs = head.token_level_loss and trainer.loss_fn is None
    return Prepared(trainer, tokenized, head, method, label_names, data.text, resolved)


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
        check_output_dir(output_dir, overwrite, inputs, locked=main)
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
        trainer.save_model(str(gathered))
    if trainer.is_world_process_zero():
        save_run_or_rescue(recipe, trainer, prepared.method, output_dir, metrics, weights=gathered)
    return RunResult(output_dir=output_dir, metrics=metrics)


def save_run_or_rescue(recipe: Recipe, trainer: Trainer, method: Method, output_dir: Path,
                       metrics: dict[str, Any], weights: Path | None = None) -> None:
    """``save_run``; when it fails (a full disk), save the run in the temporary folder instead, or point to
    the last checkpoint, and say where in a one-line error."""
    try:
        save_run(recipe, trainer, method, output_dir, metrics, weights=weights)
        return
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(output_dir / STAGING_DIR, ignore_errors=True)
        failure = f"saving the run to '{output_dir}' failed: {getattr(exc, 'strerror', None) or exc}"
    rescue = None
    try:
        rescue = Path(tempfile.mkdtemp(prefix=f"peftkit-rescued-{output_dir.name}-"))
        ownership.record(rescue, "run", WORKING_ENTRIES)
        save_run(recipe, trainer, method, rescue, metrics, weights=weights)
        kept = (f"the trained run was saved to '{rescue}' instead (`peftkit eval {rescue}` works on it); "
                "move it where you want it once there is space")
    except (OSError, SafetensorError):
        if rescue is not None:
            shutil.rmtree(rescue, ignore_errors=True)
        checkpoint = last_checkpoint(output_dir / CHECKPOINTS_DIR)
        kept = (f"its last checkpoint '{checkpoint}' is kept: free some space and run the same command with "
                "--resume to finish" if checkpoint else
                "saving it elsewhere failed too and there is no checkpoint (train.save_strategy) to fall back on")
    raise PeftkitError(f"{failure}; {kept}")


def save_run(recipe: Recipe, trainer: Trainer, method: Method, output_dir: Path, metrics: dict[str, Any],
             weights: Path | None = None) -> None:
    """Write the trained weights, tokenizer, resolved recipe, metrics and model card.

    Everything goes to a staging directory first and is moved into place file by file, so an
    interrupted save never leaves a half-written file behind. ``weights``: a directory that
    ``Trainer.save_model`` filled (sharded runs), used instead of the method's own save.
    """
    staging = output_dir / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    if weights is None:
        method.save(trainer.model, staging)
    else:
        for item in weights.iterdir():
            if item.name != "training_args.bin":
                item.replace(staging / item.name)
        shutil.rmtree(weights)
    trainer.processing_class.save_pretrained(staging)
    (staging / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
    metrics["adapter_bytes"] = sum(
        p.stat().st_size for p in staging.iterdir() if p.suffix == ".safetensors"
    )
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    write_model_card(staging, recipe, metrics)
    ownership.record(output_dir, "run", [p.name for p in staging.iterdir()])  # declared before they land
    for item in staging.iterdir():
        item.replace(output_dir / item.name)
    staging.rmdir()
    checkpoints = output_dir / CHECKPOINTS_DIR
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
