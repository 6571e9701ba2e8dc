"""What scaled-dot-product attention keeps for backward on a CUDA device, for the memory estimate's trace.

A CPU runs ``F.scaled_dot_product_attention`` with attention dropout as its math path, which saves the attention
probabilities (batch × heads × sequence², before and after dropout); the trace's fake CPU tensors take the same
path. CUDA runs it as a fused kernel (flash or memory-efficient: masks and dropout included), whose backward
recomputes them from what it keeps: query, key, value, the output, the mask and one fp32 log-sum-exp per query row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

#: Attention implementations (transformers' ``config._attn_implementation``) that call the fused kernels on CUDA.
FUSED_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "flash_attention_3")


def fuses_attention(device_kind: str, config: Any) -> bool:
    """Whether a training forward of a model with ``config`` on ``device_kind`` runs attention as a fused kernel."""
    return device_kind == "cuda" and getattr(config, "_attn_implementation", None) in FUSED_IMPLEMENTATIONS


class _KeptByFusedKernel(torch.autograd.Function):
    """sdpa's output, saving for backward what a fused kernel keeps."""

    @staticmethod
    def forward(ctx: Any, attend: Callable[[], torch.Tensor], query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        output = attend()
        log_sum_exp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, output, log_sum_exp, *(() if mask is None else (mask,)))
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> None:
        raise RuntimeError("a memory trace has no backward pass")


class FusedAttention(TorchFunctionMode):
    """Within it, ``F.scaled_dot_product_attention`` saves for backward what CUDA's fused kernels keep, not the math
    path's attention probabilities (for tracing saved tensors only: its backward raises)."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        named = dict(zip(("query", "key", "value", "attn_mask"), args, strict=False)) | kwargs
        return _KeptByFusedKernel.apply(lambda: func(*args, **kwargs), named["query"], named["key"], named["value"],
                                        named.get("attn_mask"))
