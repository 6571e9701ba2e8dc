"""The method × support table (`peftkit methods`, README), generated from the registry."""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING

from peftkit.config.sections import ModelSection, QuantizationSection
from peftkit.model.params import count_parameters
from peftkit.registry import HEADS, METHODS

if TYPE_CHECKING:
    from torch import nn

HEAD_KIND_NAMES = {"sequence_classification": "seq", "token_classification": "token", "causal_lm": "causal"}
#: Built-ins in reading order (baselines, LoRA family, other adapters, prompt methods); plugins follow.
ORDER = ("full", "head_only", "lora", "qlora", "dora", "adalora", "ia3", "loha", "lokr", "vera", "oft",
         "prefix_tuning", "prompt_tuning", "p_tuning")


@functools.lru_cache(maxsize=4)
def _base_model(model_name: str, mode: str) -> tuple[nn.Module, list[str]]:
    from peftkit.model.loading import load_base_model

    head = HEADS.get("classification")(HEADS.get("classification").config_cls())
    quantization = QuantizationSection(mode=mode, compute_dtype="float32")  # the trainable share does not depend on it
    return load_base_model(ModelSection(name=model_name), quantization, head, ["a", "b"])


def trainable_percent(method_name: str, model_name: str) -> str:
    """Trainable share of parameters of a method (default options) on a model with a 2-label classification head."""
    method = METHODS.get(method_name)
    mode = "none" if "none" in method.quantization_modes else method.quantization_modes[0]
    base, head_modules = _base_model(model_name, mode)
    task_type = HEADS.get("classification").task_type
    model = method(method.config_cls()).apply(copy.deepcopy(base), head_modules, task_type)
    trainable, total = count_parameters(model)
    return f"{100 * trainable / total:.3f} %"


def ordered_methods() -> list[str]:
    """Registered method names: the built-ins in ORDER, then any others (plugins) as registered."""
    names = METHODS.names()
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def method_rows(model_name: str | None = None) -> list[tuple[str, ...]]:
    """Header + one row per method: name, 8-bit, 4-bit, heads, trainable %, description."""
    rows: list[tuple[str, ...]] = [("method", "8-bit", "4-bit", "heads", "trainable", "description")]
    for name in ordered_methods():
        method = METHODS.get(name)
        heads = "+".join(HEAD_KIND_NAMES.get(k, k) for k in method.head_kinds)
        share = trainable_percent(name, model_name) if model_name else "-"
        rows.append((
            name,
            "yes" if "8bit" in method.quantization_modes else "no",
            "yes" if "4bit" in method.quantization_modes else "no",
            heads,
            share,
            method.description,
        ))
    return rows
