"""LoRA and its variants (QLoRA on a quantized base, DoRA, rsLoRA, PiSSA/OLoRA/Gaussian init)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from peftkit.config.schema import option
from peftkit.methods.base import LORA_NAMES, AdapterOptions, QuantizablePeftMethod
from peftkit.registry import METHODS

if TYPE_CHECKING:
    from torch import nn

    from peftkit.config.sections import Recipe


class LoraOptions(AdapterOptions):
    name: str = option("lora", "fine-tuning method (`peftkit methods` lists them)")
    r: int = option(8, "rank of the low-rank update", ge=1)
    alpha: float = option(16, "scaling numerator: the update is scaled by alpha / r (alpha / √r with rsLoRA)", gt=0)
    dropout: float = option(0.1, "dropout on the LoRA branch input", ge=0, lt=1)
    bias: Literal["none", "all", "lora_only"] = option("none", "which biases to train")
    use_rslora: bool = option(False, "rank-stabilised scaling alpha / √r")
    use_dora: bool = option(False, "weight-decomposed LoRA (DoRA)")
    init_lora_weights: Literal["default", "gaussian", "pissa", "olora"] = option(
        "default", "initialisation of the LoRA matrices"
    )
    loraplus_lr_ratio: float | None = option(
        None, "LoRA+ (Hayou et al. 2024): the B matrices learn at train.learning_rate × this ratio (the paper "
        "suggests 16), the A matrices and the head at train.learning_rate; empty = one rate", gt=0
    )


class LoraMethod(QuantizablePeftMethod):
    description = "low-rank adapters on the attention / linear layers (Hu et al. 2021)"
    config: LoraOptions
    default_learning_rate = 5e-4
    copied = ("r", "bias", "use_rslora", "use_dora")
    renamed = LORA_NAMES
    peft_type = "lora"  # its variants (qlora, dora) build LoRA too

    def refusal(self, recipe: Recipe) -> str | None:
        init = self.config.init_lora_weights
        if init in ("pissa", "olora") and recipe.quantization.mode != "none":
            return (f"method.init_lora_weights {init} decomposes the base weights, which must not be quantized; "
                    "use init_lora_weights: default or quantization.mode: none")
        if self.config.use_dora and recipe.quantization.mode == "8bit" and not _cuda():
            return ("DoRA on an 8-bit base fails in bitsandbytes' CPU backward pass (its int8 scale state is gone); "
                    "use quantization.mode: 4bit on a CPU")
        return None

    def bf16_on_cpu(self, recipe: Recipe) -> bool:
        return type(self) is LoraMethod and not self.config.use_dora and recipe.quantization.mode == "none"

    def peft_fields(self, model: nn.Module) -> dict[str, Any]:
        init: bool | str = True if self.config.init_lora_weights == "default" else self.config.init_lora_weights
        return {**super().peft_fields(model), "init_lora_weights": init}

    def learning_rate_factor(self, parameter_name: str) -> float:
        ratio = self.config.loraplus_lr_ratio
        return ratio if ratio is not None and ".lora_B." in f".{parameter_name}." else 1.0

    @property
    def scales_learning_rates(self) -> bool:
        return self.config.loraplus_lr_ratio not in (None, 1.0)


METHODS.register("lora")(LoraMethod)


class QloraOptions(LoraOptions):
    name: str = option("qlora", "fine-tuning method (`peftkit methods` lists them)")


@METHODS.register("qlora")
class QloraMethod(LoraMethod):
    description = "LoRA on a 4-bit (NF4) or 8-bit quantized base (Dettmers et al. 2023)"
    config: QloraOptions
    quantization_modes = ("4bit", "8bit")
    quantization_hint = "; set quantization.mode: 4bit (or use method lora on an unquantized base)"


class DoraOptions(LoraOptions):
    name: str = option("dora", "fine-tuning method (`peftkit methods` lists them)")
    use_dora: bool = option(True, "weight-decomposed LoRA (DoRA)")


@METHODS.register("dora")
class DoraMethod(LoraMethod):
    description = "LoRA with a learned magnitude per output feature (Liu et al. 2024)"
    config: DoraOptions


def _cuda() -> bool:
    """Whether torch sees a CUDA GPU; torch is imported only for a recipe that asks this."""
    import torch

    return torch.cuda.is_available()
