"""Penalty terms added to the training loss, e.g. an L1 term on the trainable weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def l1_penalty(coefficient: float) -> Any:
    """A Trainer penalty: ``coefficient × Σ|w|`` over trainable weight matrices (biases and norms left out)."""

    def penalty(model: nn.Module) -> torch.Tensor:
        weights = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        return coefficient * torch.stack([p.abs().sum() for p in weights]).sum()

    return penalty
