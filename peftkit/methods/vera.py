"""VeRA: one pair of frozen random matrices shared by all layers, trained scaling vectors (Kopiczko et al. 2024)."""

from __future__ import annotations

from typing import ClassVar

from peftkit.config.schema import option
from peftkit.methods.base import AdapterOptions, PeftMethod
from peftkit.registry import METHODS


class VeraOptions(AdapterOptions):
    name: str = option("vera", "fine-tuning method (`peftkit methods` lists them)")
    r: int = option(256, "rank of the shared random projections", ge=1)
    d_initial: float = option(0.1, "initial value of the trained scaling vector d", gt=0)
    dropout: float = option(0.0, "dropout on the VeRA branch input", ge=0, lt=1)
    projection_prng_key: int = option(0, "seed of the shared random projections")
    save_projection: bool = option(True, "save the random projections with the adapter (else rebuilt from the seed)")


@METHODS.register("vera")
class VeraMethod(PeftMethod):
    description = "VeRA: frozen random low-rank matrices shared across layers, trained scaling vectors"
    config: VeraOptions
    default_learning_rate = 5e-3
    copied = ("r", "d_initial", "projection_prng_key", "save_projection")
    renamed: ClassVar[dict[str, str]] = {"dropout": "vera_dropout"}
