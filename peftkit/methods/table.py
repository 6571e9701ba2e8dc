"""The method × support table (`peftkit methods`, README), generated from the registry."""

from __future__ import annotations

from peftkit.registry import HEADS, METHODS

HEAD_KIND_NAMES = {"sequence_classification": "seq", "token_classification": "token", "causal_lm": "causal"}


def trainable_percent(method_name: str, model_name: str) -> str:
    """Trainable share of parameters of a method on a model with a 2-label classification head."""
    from peftkit.modeling import load_base_model
    from peftkit.recipe import ModelSection, QuantizationSection
    from peftkit.training import count_parameters

    method = METHODS.get(method_name)
    mode = "none" if "none" in method.quantization_modes else method.quantization_modes[0]
    head = HEADS.get("classification")(HEADS.get("classification").config_cls())
    model, head_modules = load_base_model(ModelSection(name=model_name), QuantizationSection(mode=mode), head,
                                          ["a", "b"])
    model = method(method.config_cls()).apply(model, head_modules, head.task_type)
    trainable, total = count_parameters(model)
    return f"{100 * trainable / total:.3f} %"


def method_rows(model_name: str | None = None) -> list[tuple[str, ...]]:
    """Header + one row per method: name, 8-bit, 4-bit, heads, trainable %, description."""
    rows: list[tuple[str, ...]] = [("method", "8-bit", "4-bit", "heads", "trainable", "description")]
    for name, method in METHODS:
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
