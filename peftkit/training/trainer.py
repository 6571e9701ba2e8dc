"""HF Trainer with peftkit's extension points: a head's own loss function, extra penalty terms and a causal LM
loss that never holds full-vocabulary logits (peftkit.heads.lm_loss)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_pt_utils import nested_gather

from peftkit.heads.lm_loss import HiddenStates, lm_loss
from peftkit.training.checkpoints import AtomicCheckpoints
from peftkit.training.distributed import Fsdp
from peftkit.training.guards import DeferredLossGuard, check_loss, skips_on_found_inf
from peftkit.training.optim import ParamGroups

#: ``loss_fn(logits, labels) -> loss``, e.g. class-weighted cross-entropy from a head.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``penalty(model) -> scalar`` added to every training loss, e.g. an L1 term on trainable weights.
Penalty = Callable[[nn.Module], torch.Tensor]


class PeftkitTrainer(AtomicCheckpoints, Fsdp, Trainer):
    """A Trainer whose loss can come from the head and carry penalty terms; otherwise HF's own.

    Checkpoints are written atomically (see peftkit.training.checkpoints); a NaN / inf loss stops the run
    before the optimizer step (peftkit.training.guards): checked on device and read back only where the Trainer
    syncs anyway when the optimizer skips a flagged step itself, every step otherwise.
    """

    _loss_guard: DeferredLossGuard | None = None

    def __init__(self, *args: Any, loss_fn: LossFn | None = None, penalties: Sequence[Penalty] = (),
                 param_groups: ParamGroups | None = None, lm_loss: str = "full", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.penalties = list(penalties)
        self.param_groups = param_groups
        self.lm_loss = lm_loss
        self.hidden_states = HiddenStates(self.model) if lm_loss != "full" else None

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """HF's optimizer, over ``param_groups(model, decay_names)`` (each with its own rate) when given."""
        if self.optimizer is None and self.param_groups is not None:
            opt_model = self.model if model is None else model
            cls, kwargs = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = self.param_groups(opt_model, self.get_decay_parameter_names(opt_model))
            self.optimizer_cls_and_kwargs = (cls, {**kwargs, "params": groups})
        return super().create_optimizer(model)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self.hidden_states is not None and model.training and "labels" in inputs:
            loss, outputs = self._lm_loss(model, inputs, num_items_in_batch)
        elif self.loss_fn is None:
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
        else:
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            loss = self.loss_fn(outputs.logits, labels)
        if model.training:
            for penalty in self.penalties:
                loss = loss + penalty(model)
        return (loss, outputs) if return_outputs else loss

    def _lm_loss(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any) -> tuple[torch.Tensor, Any]:
        """`train.lm_loss` chunked / liger, normalised and scaled across processes as the Trainer's own loss."""
        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss, outputs = lm_loss(self.hidden_states, model, inputs, self.lm_loss, items,
                                self.args.label_smoothing_factor)
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and items is not None:
            loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss, outputs

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        guard = self._deferred_guard()
        if guard is not None:
            guard.add(loss, self.state)
            return loss
        # the mean over processes, as the Trainer logs it; every process then sees the same NaN and stops
        step_loss = nested_gather(loss.detach(), self.args.parallel_mode).mean() if self.args.world_size > 1 else loss
        self.run_loss_sum += check_loss(step_loss, self.state, self.args.output_dir)
        return loss

    def _deferred_guard(self) -> DeferredLossGuard | None:
        """The on-device guard for this run's optimizer: one process, no fp16 GradScaler (it owns ``found_inf``)
        and an optimizer that skips a flagged step on device; None means the per-step check."""
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        if self._loss_guard is not None and self._loss_guard.optimizer is inner:
            return self._loss_guard
        self._flush_loss_guard()
        if self.args.world_size == 1 and self.accelerator.scaler is None and skips_on_found_inf(inner):
            self._loss_guard = DeferredLossGuard(inner, self.args.device)
        return self._loss_guard

    def _flush_loss_guard(self) -> None:
        """Add the device loss sum to ``run_loss_sum``; raise for a NaN / inf loss since the last flush."""
        if self._loss_guard is not None:
            self.run_loss_sum += self._loss_guard.flush(self.args.output_dir)

    def _maybe_log_save_evaluate(self, *args: Any, **kwargs: Any) -> None:
        control = self.control
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self._flush_loss_guard()
        super()._maybe_log_save_evaluate(*args, **kwargs)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = super().train(*args, **kwargs)
            self._flush_loss_guard()
            return result
        finally:
            if self._loss_guard is not None:
                self._loss_guard.detach()
                self._loss_guard = None
