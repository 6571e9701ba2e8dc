"""What a fine-tuning method declares: options, supported heads and quantization, apply / save / load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from peft import PeftConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import TrainerCallback

from peftkit.schema import MethodConfig

if TYPE_CHECKING:
    from peftkit.recipe import Recipe

ALL_HEAD_KINDS = ("sequence_classification", "token_classification", "causal_lm")
ALL_QUANTIZATION = ("none", "8bit", "4bit")

#: Builds the base model; ``path`` replaces the recipe's model (used to reload fully fine-tuned runs).
BaseBuilder = Callable[..., nn.Module]


class Method:
    """Base class of a fine-tuning method. Subclass, set the class attributes, register with
    ``@METHODS.register("name")`` (or an entry point in the ``peftkit.methods`` group)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    head_kinds: ClassVar[tuple[str, ...]] = ALL_HEAD_KINDS
    quantization_modes: ClassVar[tuple[str, ...]] = ("none",)
    quantization_hint: ClassVar[str] = ""  # appended to the refusal of an unsupported quantization mode
    head_hint: ClassVar[str] = ""  # appended to the refusal of an unsupported head kind
    default_learning_rate: ClassVar[float] = 5e-4

    def __init__(self, config: MethodConfig) -> None:
        self.config = config

    def refusal(self, recipe: Recipe) -> str | None:
        """Why this method cannot run the recipe (checked at validation), or None; quantization modes and
        head kinds are checked from the class attributes before this."""
        return None

    def callbacks(self) -> list[TrainerCallback]:
        """Trainer callbacks the method needs during training (e.g. AdaLoRA's rank budget)."""
        return []

    def apply(self, model: nn.Module, head_modules: list[str], task_type: Any) -> nn.Module:
        """Make ``model`` trainable the method's way; ``head_modules`` must be trained and saved."""
        raise NotImplementedError

    def save(self, model: nn.Module, directory: Path) -> None:
        """Write what was trained to ``directory``."""
        model.save_pretrained(directory)

    def load(self, directory: Path, build_base: BaseBuilder) -> nn.Module:
        """Rebuild the trained model from ``directory`` for inference."""
        raise NotImplementedError


class PeftMethod(Method):
    """A method that is a peft config: applied with ``get_peft_model``, saved in peft's own format."""

    def peft_config(self, model: nn.Module, head_modules: list[str], task_type: Any) -> PeftConfig:
        """The peft config for this method's options on ``model`` (its architecture picks default targets)."""
        raise NotImplementedError

    def apply(self, model: nn.Module, head_modules: list[str], task_type: Any) -> nn.Module:
        if getattr(model, "is_quantized", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, self.peft_config(model, head_modules, task_type))

    def load(self, directory: Path, build_base: BaseBuilder) -> nn.Module:
        return PeftModel.from_pretrained(build_base(), directory)
