"""AdaLoRA's Trainer callback, apart from the method's declaration so that declaring it imports no transformers."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from peftkit.errors import PeftkitError


class RankBudget(TrainerCallback):
    """Sets AdaLoRA's schedule length from the Trainer and reallocates ranks after every optimizer step."""

    def __init__(self, total_step: int | None) -> None:
        self.total_step = total_step

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        config = model.peft_config[model.active_adapter]
        config.total_step = self.total_step or state.max_steps
        if config.tinit >= config.total_step - config.tfinal:
            raise PeftkitError(
                f"method.tinit ({config.tinit}) + method.tfinal ({config.tfinal}) must be below the run's "
                f"{config.total_step} optimizer steps (adalora)"
            )

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          model: nn.Module | None = None, **kwargs: Any) -> None:
        model.base_model.update_and_allocate(state.global_step)
