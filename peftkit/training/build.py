"""Recipe → head + method + data + model → a ready Trainer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from peftkit.config.sections import AUTO, DataSection, Recipe
from peftkit.config.validation import check_method
from peftkit.data import preprocess
from peftkit.data.pipeline import build_splits, longest_input, padded_length
from peftkit.errors import PeftkitError
from peftkit.hardware import auto
from peftkit.hardware import device as devices
from peftkit.hardware.preflight import check_machine
from peftkit.heads.base import Head
from peftkit.methods.base import Method
from peftkit.model.fast_dropout import use_fast_dropout
from peftkit.model.heap import TrimAtPhaseEnd, compact_heap
from peftkit.model.loading import check_position_limit, load_base_model, load_tokenizer, training_device
from peftkit.registry import plugins
from peftkit.rundir.layout import CHECKPOINTS_DIR
from peftkit.training import distributed, tracking
from peftkit.training.optim import parameter_groups
from peftkit.training.penalties import l1_penalty
from peftkit.training.trainer import PeftkitTrainer

#: TrainingArguments' name for gradient checkpointing: `activation_checkpointing` from transformers 5.2x on (the
#: old name warns there), `gradient_checkpointing` before.
CHECKPOINTING_ARGUMENT = ("activation_checkpointing" if "activation_checkpointing" in
                          {f.name for f in dataclasses.fields(TrainingArguments)} else "gradient_checkpointing")


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
        logging_nan_inf_filter=False,  # a per-step host sync; peftkit stops on a NaN / inf loss before it is logged
        **{CHECKPOINTING_ARGUMENT: t.gradient_checkpointing is True and not recipe.distributed.fsdp},
        optim=t.optim,
        tf32=t.tf32,
        torch_compile=t.torch_compile,
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
        **distributed.training_kwargs(recipe.distributed, checkpointing=t.gradient_checkpointing is True),
    )


def padded_collator(head: Head, tokenizer: Any, data: DataSection, tokenized: DatasetDict) -> Any:
    """The head's collator, padding to a fixed length when ``data.padding`` asks for one."""
    collator = head.collator(tokenizer)
    if data.padding == "dynamic":
        return collator
    if not hasattr(collator, "max_length") or not hasattr(collator, "padding"):
        raise PeftkitError(f"'data.padding': task.head '{head.name}' pads its own way; use data.padding: dynamic")
    collator.padding, collator.max_length = "max_length", padded_length(tokenized, data)
    return collator


def check_lm_loss(recipe: Recipe, head: Head, method: Method, model: Any) -> None:
    """Refuse `train.lm_loss` chunked / liger for a causal LM whose forward cannot skip its output layer, whose
    method adds to the model's own loss, or whose weights FSDP / DeepSpeed shard."""
    if head.kind != "causal_lm" or recipe.train.lm_loss == "full":
        return
    if recipe.distributed.fsdp or recipe.distributed.deepspeed:
        raise PeftkitError(f"'train.lm_loss': {recipe.train.lm_loss} runs the output layer outside the model's "
                           "forward, where FSDP / DeepSpeed have not gathered its sharded weights; use full or auto")
    if method.adds_to_model_loss:
        raise PeftkitError(f"'train.lm_loss': {recipe.train.lm_loss} leaves out what method {recipe.method.name} "
                           "adds to the model's loss; use full or auto")
    if not auto.chunkable(type(model)):
        raise PeftkitError(f"'train.lm_loss': {recipe.train.lm_loss} needs a model whose forward takes "
                           f"logits_to_keep and has a decoder; {type(model).__name__} has not, use full")


def prepare_recipe(recipe: Recipe, device: devices.Device) -> dict[str, Any]:
    """Resolve the recipe's `auto` options (gradient checkpointing aside) for ``device`` in place and refuse what
    this machine cannot run, before anything loads; returns {dotted key: value} of what was `auto`."""
    resolved = auto.resolve_settings(recipe, device)
    check_machine(recipe)
    check_method(recipe)  # e.g. full fine-tuning of float16 weights once `auto` precision is fp16
    tracking.chosen(recipe.train.report_to)
    return resolved


def build_trainer(recipe: Recipe, output_dir: Path) -> Prepared:
    """Everything a run needs, with the seed set before any weight is initialised."""
    lowercase = recipe.model.lowercase
    tokenizer = load_tokenizer(recipe.model)  # fetches a catalogue model, whose config `auto` attention reads
    device = devices.current()
    if recipe.train.cpu_heap == "compact" and device.kind == "cpu":
        compact_heap()  # before the model loads: quantizing churns the heap most
    resolved = prepare_recipe(recipe, device)
    if lowercase == AUTO:  # resolved by the tokenizer's loader, which reads the vocabulary
        resolved["model.lowercase"] = recipe.model.lowercase
    head, method = plugins(recipe)
    recipe.preprocess = preprocess.resolved(recipe.preprocess)  # stop words saved inline with the run
    data = build_splits(recipe, head, tokenizer, keep=False)  # cached once the model has loaded
    tokenized, label_names = data.tokenized, data.label_names
    set_seed(recipe.train.seed)
    sharded = bool(recipe.distributed.fsdp or recipe.distributed.deepspeed)
    pooling = getattr(recipe.task, "pooling", None)
    model, head_modules = load_base_model(recipe.model, recipe.quantization, head, label_names,
                                          device=training_device(sharded))
    if pooling == AUTO:  # resolved by the loader, once it knows the architecture, in the head's options
        recipe.task.pooling = resolved["task.pooling"] = head.config.pooling
    check_lm_loss(recipe, head, method, model)
    longest = recipe.data.max_length if recipe.data.padding == "max_length" else longest_input(tokenized)
    check_position_limit(model, longest, recipe.model.name)
    model = method.master_weights(method.apply(model, head_modules, head.task_type), recipe.train.precision)
    if device.kind == "cpu":
        use_fast_dropout(model)
    if recipe.distributed.fsdp:
        distributed.set_wrap(model, recipe.distributed)
    resolved.update(auto.resolve_checkpointing(recipe, device, padded_length(tokenized, recipe.data),
                                                  label_names, processes=distributed.world_size()))
    args = training_arguments(recipe, head, output_dir, has_validation=len(tokenized["validation"]) > 0)
    callbacks = [EarlyStoppingCallback(recipe.train.early_stopping_patience)] if args.load_best_model_at_end else []
    callbacks += [*method.callbacks(), TrimAtPhaseEnd()]
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
        param_groups=parameter_groups(args.learning_rate, args.weight_decay, recipe.train.layerwise_lr_decay,
                                      method.learning_rate_factor)
        if recipe.train.layerwise_lr_decay is not None or method.scales_learning_rates else None,
        lm_loss=recipe.train.lm_loss if head.kind == "causal_lm" else "full",
        **head.trainer_kwargs(),
    )
    # transformers multiplies the loss by the process count for models whose forward takes **kwargs, assuming
    # it was divided by the global item count; classification models take **kwargs but return a plain mean.
    trainer.model_accepts_loss_kwargs = head.token_level_loss and trainer.loss_fn is None
    data.keep_tokenized()
    return Prepared(trainer, tokenized, head, method, label_names, data.text, resolved)
