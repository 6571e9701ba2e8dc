"""`task.pooling`: which vector of a classification model's encoder its classifier reads.

The transformers model class stays (peft's task type, its saved classifier, merging and saving keep working); a
pooling other than the architecture's own is a forward hook on the model's encoder (``model.base_model``) that
replaces the vector the head reads: BERT-like models' pooler output, or the first token's vector for heads that
read that one (RoBERTa, MPNet, DistilBERT). The hook is :func:`pool`, untyped and self-contained (torch only):
model cards print its source for loading a run or an export without peftkit.
"""

from __future__ import annotations

import functools
from typing import Any

from peftkit.errors import PeftkitError

#: Architecture family → the poolings it supports, its own first.
SUPPORTED = {
    "pooler": ("pooler", "cls", "mean"),  # BERT-like: the classifier reads tanh(dense(CLS)) from the pooler
    "first": ("cls", "mean"),  # the head reads the first token's vector (RoBERTa, MPNet, DistilBERT)
    "last": ("last",),  # the head reads the last non-padding token (decoder LMs: Llama, Qwen, GPT-2)
}
DESCRIBED = {
    "pooler": "its head reads the pooler output",
    "first": "its head reads the first token and it has no pooler",
    "last": "its head reads the last non-padding token",
}


def pool(module, args, kwargs, output, pooling="mean"):
    """Forward hook (``register_forward_hook(..., with_kwargs=True)``) on a transformers encoder: the vector its
    classification head reads becomes the first token's (``cls``) or the mean of the non-padding tokens'
    (``mean``, by the ``attention_mask``)."""
    import torch

    hidden = output[0]
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(hidden.shape[:2], device=hidden.device)
        weights = mask[:, -hidden.shape[1]:].to(hidden.dtype).unsqueeze(-1)  # a prefix adapter's mask is longer
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    if getattr(module, "pooler", None) is not None:  # BERT-like: the classifier reads the pooler output
        if isinstance(output, tuple):
            return (hidden, pooled, *output[2:])
        output.pooler_output = pooled
        return output
    hidden = torch.cat([pooled.unsqueeze(1), hidden[:, 1:]], dim=1)  # the head reads the first token's vector
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    output.last_hidden_state = hidden
    return output


def family(model: Any) -> str:
    """``model``'s architecture family: "pooler", "first" or "last" (keys of SUPPORTED)."""
    base = getattr(model, "base_model", model)
    if base is not model and getattr(base, "pooler", None) is not None:
        return "pooler"
    return "first" if hasattr(model, "classifier") else "last"


def native(model: Any) -> str:
    """The pooling ``model``'s own head does."""
    return SUPPORTED[family(model)][0]


def apply_pooling(model: Any, pooling: str) -> None:
    """Make ``model`` (a transformers sequence classification model) pool by ``pooling``, or refuse one that does
    not apply to its architecture."""
    kind = family(model)
    if pooling not in SUPPORTED[kind]:
        raise PeftkitError(
            f"'task.pooling': {pooling} does not apply to {type(model).__name__} ({DESCRIBED[kind]}); it supports "
            f"{', '.join(SUPPORTED[kind])} or auto"
        )
    if pooling != SUPPORTED[kind][0]:
        model.base_model.register_forward_hook(functools.partial(pool, pooling=pooling), with_kwargs=True)
