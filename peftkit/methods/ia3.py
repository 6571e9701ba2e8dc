"""(IA)³: learned vectors that rescale keys, values and feed-forward activations (Liu et al. 2022)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftkit.config.schema import option
from peftkit.methods.base import AdapterOptions, QuantizablePeftMethod
from peftkit.methods.targets import resolve_target_modules
from peftkit.registry import METHODS

if TYPE_CHECKING:
    from torch import nn

    from peftkit.config.sections import Recipe


class Ia3Options(AdapterOptions):
    name: str = option("ia3", "fine-tuning method (`peftkit methods` lists them)")
    feedforward_modules: list[str] | None = option(
        None, "targets whose input (not output) is rescaled, a subset of target_modules; empty = the "
        "architecture's default"
    )
    init_ia3_weights: bool = option(True, "start the scaling vectors at 1 (the adapter begins as the identity)")


@METHODS.register("ia3")
class Ia3Method(QuantizablePeftMethod):
    description = "(IA)³: learned rescaling of keys, values and feed-forward activations (Liu et al. 2022)"
    config: Ia3Options
    default_learning_rate = 3e-3
    float32_beside_quantized = True
    copied = ("init_ia3_weights",)

    def refusal(self, recipe: Recipe) -> str | None:
        targets, feedforward = self.config.target_modules, self.config.feedforward_modules
        if isinstance(targets, list) and feedforward and not set(feedforward) <= set(targets):
            return (f"method.feedforward_modules {sorted(set(feedforward) - set(targets))} are not among "
                    "method.target_modules; (IA)³ rescales only targeted modules")
        return None

    def peft_fields(self, model: nn.Module) -> dict[str, Any]:
        fields = super().peft_fields(model)
        feedforward = self.config.feedforward_modules
        if feedforward is None:
            feedforward = [] if self.config.target_modules else resolve_target_modules("ia3_feedforward", model, None)
        return {**fields, "feedforward_modules": feedforward}
