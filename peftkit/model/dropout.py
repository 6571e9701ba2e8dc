"""Dropout overrides by config field: the recipe's `model.*_dropout` options for any architecture."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

from peftkit.errors import PeftkitError

#: Recipe key → the config fields that carry that dropout, across architectures (BERT family, DistilBERT,
#: GPT-2, Llama / Qwen, Falcon …). Every field the model's config has is set.
DROPOUT_FIELDS: dict[str, tuple[str, ...]] = {
    "hidden_dropout": ("hidden_dropout_prob", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"),
    "classifier_dropout": ("classifier_dropout", "seq_classif_dropout", "summary_first_dropout"),
}


def dropout_overrides(config: PretrainedConfig, settings: dict[str, float | None]) -> dict[str, float]:
    """Config fields to set for the dropout options given (``{"hidden_dropout": 0.2, …}``; None = keep).

    An option the architecture has no field for is an error naming the option and the fields looked for.
    """
    overrides: dict[str, float] = {}
    for key, value in settings.items():
        if value is None:
            continue
        fields = [f for f in DROPOUT_FIELDS[key] if hasattr(config, f)]
        if not fields:
            raise PeftkitError(
                f"'model.{key}': the {config.model_type} config has no such dropout "
                f"(looked for {', '.join(DROPOUT_FIELDS[key])})"
            )
        overrides.update(dict.fromkeys(fields, value))
    return overrides


def dropout_kwargs(model: Any, source: str) -> dict[str, float]:
    """``from_pretrained`` keyword arguments for the recipe's `model.*_dropout` options (none when unset)."""
    settings = {key: getattr(model, key) for key in DROPOUT_FIELDS}
    if all(value is None for value in settings.values()):
        return {}
    config = AutoConfig.from_pretrained(source, trust_remote_code=model.trust_remote_code)
    return dropout_overrides(config, settings)
