"""Optimizer parameter groups with their own learning rates: layer-wise decay and a method's factors.

Layer-wise learning-rate decay (LLRD), with decay d and N transformer layers (numbered 0 … N−1 in module names,
``layer.3.``): layer i learns at lr × d^(N−i), the embeddings at lr × d^(N+1), and everything above the layers
(pooler, task head, final norm) at lr. Adapter weights inside a layer (``…layer.3.attention…lora_A…``) take that
layer's rate. A method may scale a parameter's rate on top (``Method.learning_rate_factor``: LoRA+ trains the B
matrices faster).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from torch import nn

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:embeddings?|embed_tokens|embed_positions|wte|wpe|word_embeddings)(?:\.|$)")

#: ``groups(model, decay_parameter_names) -> optimizer parameter groups``; PeftkitTrainer's optimizer hook.
ParamGroups = Callable[[nn.Module, Collection[str]], list[dict[str, Any]]]


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a parameter: 0 for embeddings, i + 1 for layer i, num_layers + 1 for what sits above."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    if _EMBEDDING.search(name):
        return 0
    return num_layers + 1


def count_layers(model: nn.Module) -> int:
    """Transformer layers of a model, read from its parameter names."""
    found = [int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER.search(n))]
    return max(found) + 1 if found else 0


def parameter_groups(learning_rate: float, weight_decay: float, layer_decay: float | None = None,
                     factor: Callable[[str], float] = lambda name: 1.0) -> ParamGroups:
    """A parameter-group builder: one group per (rate, weight decay on/off) holding trainable weights, each rate
    ``learning_rate`` × the layer's decay (LLRD; none when ``layer_decay`` is None) × ``factor(name)``."""

    def groups(model: nn.Module, decay_names: Collection[str]) -> list[dict[str, Any]]:
        num_layers = count_layers(model)
        by_key: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                depth = num_layers + 1 if layer_decay is None else layer_depth(name, num_layers)
                rate = learning_rate * (layer_decay or 1.0) ** (num_layers + 1 - depth) * factor(name)
                by_key.setdefault((rate, name in decay_names), []).append(parameter)
        return [{"params": params, "lr": rate, "weight_decay": weight_decay if decays else 0.0}
                for (rate, decays), params in sorted(by_key.items())]

    return groups
