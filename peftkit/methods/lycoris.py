"""LyCORIS methods: LoHa (Hadamard product of low-rank pairs) and LoKr (Kronecker product)."""

from __future__ import annotations

from peftkit.config.schema import option
from peftkit.methods.base import AdapterOptions, PeftMethod
from peftkit.registry import METHODS


class LohaOptions(AdapterOptions):
    name: str = option("loha", "fine-tuning method (`peftkit methods` lists them)")
    r: int = option(8, "rank of each low-rank factor pair", ge=1)
    alpha: float = option(8, "scaling numerator: the update is scaled by alpha / r", gt=0)
    rank_dropout: float = option(0.0, "dropout on the rank dimension during training", ge=0, lt=1)
    module_dropout: float = option(0.0, "probability of skipping a whole adapted module during training", ge=0, lt=1)


class LokrOptions(LohaOptions):
    name: str = option("lokr", "fine-tuning method (`peftkit methods` lists them)")
    decompose_both: bool = option(False, "LoKr: also decompose the left Kronecker factor into a low-rank pair")
    decompose_factor: int = option(-1, "LoKr: factor of the Kronecker split of each dimension; -1 = balanced")


@METHODS.register("loha")
class LohaMethod(PeftMethod):
    description = "LoHa: Hadamard product of two low-rank updates (LyCORIS; Hyeon-Woo et al. 2022)"
    config: LohaOptions
    default_learning_rate = 1e-3
    copied = ("r", "alpha", "rank_dropout", "module_dropout")


@METHODS.register("lokr")
class LokrMethod(LohaMethod):
    description = "LoKr: Kronecker product of a small and a low-rank factor (LyCORIS; Edalati et al. 2022)"
    config: LokrOptions
    copied = (*LohaMethod.copied, "decompose_both", "decompose_factor")
