"""Layer-wise learning-rate decay (LLRD): optimizer parameter groups whose rate shrinks with depth.

With decay d and N transformer layers (numbered 0 … N−1 in module names, ``layer.3.``): layer i learns at
lr × d^(N−i), the embeddings at lr × d^(N+1), and everything above the layers (pooler, task head, final
norm) at lr. Adapter weights inside a layer (``…layer.3.attention…lora_A…``) take that layer's rate.
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


def layerwise_groups(decay: float, learning_rate: float, weight_decay: float) -> ParamGroups:
    """A parameter-group builder for LLRD: one group per (depth, weight decay on/off) holding trainable weights."""

    def groups(model: nn.Module, decay_names: Collection[str]) -> list[dict[str, Any]]:
        num_layers = count_layers(model)
        by_key: dict[tuple[int, bool], list[nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                by_key.setdefault((layer_depth(name, num_layers), name in decay_names), []).append(parameter)
        return [
            {
                "params": params,
                "lr": learning_rate * decay ** (num_layers + 1 - depth),
                "weight_decay": weight_decay if decays else 0.0,
            }
            for (depth, decays), params in sorted(by_key.items())
        ]

    return groups
