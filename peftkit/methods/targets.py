"""Default target modules per architecture: peft's own tables, plus the architectures peft leaves out."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from peftkit.errors import PeftkitError

if TYPE_CHECKING:
    from torch import nn


@cache
def peft_tables() -> dict[str, dict[str, list[str]]]:
    """Method family → peft's model-type → target-modules table (peft imported on first use)."""
    from peft.utils import constants

    return {
        "lora": constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
        "adalora": constants.TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING,
        "ia3": constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
        "ia3_feedforward": constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
        "loha": constants.TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING,
        "lokr": constants.TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING,
        "vera": constants.TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING,
        "oft": constants.TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING,
        "boft": constants.TRANSFORMERS_MODELS_TO_BOFT_TARGET_MODULES_MAPPING,
    }


#: Architectures missing from peft's tables (same choice as peft makes for their relatives).
EXTRA: dict[str, dict[str, list[str]]] = {
    "distilbert": {"attention": ["q_lin", "v_lin"], "ia3": ["k_lin", "v_lin", "lin2"], "ia3_feedforward": ["lin2"]},
    "qwen2": {"attention": ["q_proj", "v_proj"]},
    "qwen3": {"attention": ["q_proj", "v_proj"]},
    "gpt2": {"attention": ["c_attn"]},
}


def default_target_modules(family: str, model_type: str) -> list[str] | None:
    """The default targets of a method family on a model type; None when neither peft nor peftkit has one."""
    tables = peft_tables()
    table = tables.get(family, tables["lora"])
    if model_type in table:
        return list(table[model_type])
    extra = EXTRA.get(model_type, {})
    found = extra.get(family) or (extra.get("attention") if not family.startswith("ia3") else None)
    return list(found) if found else None


def resolve_target_modules(family: str, model: nn.Module, given: list[str] | str | None) -> list[str] | str:
    """``given`` (module names or 'all-linear'), else the architecture's default; a clear error without one."""
    if given:
        return given
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    found = default_target_modules(family, model_type)
    if found is None:
        raise PeftkitError(
            f"method.target_modules: no default target modules for model type '{model_type}'; "
            "list module names (e.g. [q_proj, v_proj]) or use 'all-linear'"
        )
    return found
