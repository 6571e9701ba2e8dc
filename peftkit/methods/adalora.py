"""AdaLoRA: LoRA in SVD form whose rank budget is moved to the most important layers during training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from peftkit.config.schema import option
from peftkit.errors import PeftkitError
from peftkit.methods.base import LORA_NAMES, AdapterOptions, QuantizablePeftMethod
from peftkit.registry import METHODS

if TYPE_CHECKING:
    from peftkit.config.sections import Recipe


class AdaLoraOptions(AdapterOptions):
    name: str = option("adalora", "fine-tuning method (`peftkit methods` lists them)")
    init_r: int = option(12, "starting rank of every adapted layer", ge=1)
    target_r: int = option(8, "average rank left after the budget is reallocated", ge=1)
    alpha: float = option(8, "scaling numerator: the update is scaled by alpha / r", gt=0)
    dropout: float = option(0.0, "dropout on the AdaLoRA branch input", ge=0, lt=1)
    tinit: int = option(0, "steps of plain training before ranks are pruned", ge=0)
    tfinal: int = option(0, "last steps trained with the final ranks fixed", ge=0)
    deltaT: int = option(1, "steps between two budget reallocations", ge=1)
    beta1: float = option(0.85, "EMA factor of the importance (sensitivity) scores", gt=0, lt=1)
    beta2: float = option(0.85, "EMA factor of the importance uncertainty", gt=0, lt=1)
    orth_reg_weight: float = option(0.5, "weight of the orthogonality penalty on the singular vectors", ge=0)
    total_step: int | None = option(None, "steps the budget schedule spans; empty = the run's total optimizer steps",
                                    ge=1)


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


@METHODS.register("adalora")
class AdaLoraMethod(QuantizablePeftMethod):
    description = "AdaLoRA: SVD-form LoRA that moves its rank budget to the important layers (Zhang et al. 2023)"
    config: AdaLoraOptions
    default_learning_rate = 1e-3
    float32_beside_quantized = True
    adds_to_model_loss = True
    copied = ("init_r", "target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight")
    renamed = LORA_NAMES

    def refusal(self, recipe: Recipe) -> str | None:
        cfg = self.config
        if cfg.target_r > cfg.init_r:
            return f"method.target_r ({cfg.target_r}) must not exceed method.init_r ({cfg.init_r})"
        steps = cfg.total_step or (recipe.train.max_steps if recipe.train.max_steps > 0 else None)
        if steps is not None and cfg.tinit >= steps - cfg.tfinal:
            return (f"method.tinit ({cfg.tinit}) + method.tfinal ({cfg.tfinal}) must be below the {steps} steps "
                    "the rank budget schedule spans")
        return None

    def callbacks(self) -> list[TrainerCallback]:
        return [RankBudget(self.config.total_step)]

    def peft_fields(self, model: nn.Module) -> dict[str, Any]:
        cfg = self.config
        total_step = cfg.total_step or cfg.tinit + cfg.tfinal + 1  # replaced by the run's steps at train begin
        return {**super().peft_fields(model), "total_step": total_step}
