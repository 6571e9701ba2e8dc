"""OFT: a learned block-diagonal orthogonal rotation of each adapted weight (Qiu et al. 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftkit.config.schema import option
from peftkit.methods.base import AdapterOptions, PeftMethod
from peftkit.registry import METHODS

if TYPE_CHECKING:
    from torch import nn


class OftOptions(AdapterOptions):
    name: str = option("oft", "fine-tuning method (`peftkit methods` lists them)")
    oft_block_size: int = option(32, "size of each orthogonal block; must divide the adapted layers' input size", ge=1)
    module_dropout: float = option(0.0, "probability of dropping a whole block during training", ge=0, lt=1)
    coft: bool = option(False, "constrained OFT: keep the rotation within eps of the identity")
    eps: float = option(6e-5, "COFT's bound on the distance to the identity (with coft)", gt=0)
    block_share: bool = option(False, "share one orthogonal block across all blocks of a layer")
    use_cayley_neumann: bool = option(True, "approximate the Cayley transform by a Neumann series (faster)")


@METHODS.register("oft")
class OftMethod(PeftMethod):
    description = "OFT: learned block-diagonal orthogonal rotation of the adapted weights (Qiu et al. 2023)"
    config: OftOptions
    default_learning_rate = 1e-3
    copied = ("oft_block_size", "module_dropout", "coft", "eps", "block_share", "use_cayley_neumann")

    def peft_fields(self, model: nn.Module) -> dict[str, Any]:
        return {**super().peft_fields(model), "r": 0}  # peft takes the block size or a block count, not both
