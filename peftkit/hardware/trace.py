"""Count the tensors a training forward saves for backward, without memory or arithmetic.

The model's parameters and buffers are stood in for by fake CPU tensors (torch's FakeTensorMode: shapes, dtypes
and the CPU's own kernel choices), so a forward under autocast casts as a CPU run's mixed precision does and sdpa
takes the kernel a CPU takes (the math path, saving the attention probabilities, where attention dropout is on;
the fused one, which does not, where it is off). ``fused_attention`` models CUDA's kernels instead
(peftkit.hardware.attention). A CUDA run's mixed precision is traced under CPU autocast's rules: both compute the
linear layers in half precision and leave the residual stream, norms and losses in fp32, which is most of what a
forward saves (their lists of fp32 operations differ in detail).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from itertools import chain
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from peftkit.hardware.attention import FusedAttention


def _fake(mode: FakeTensorMode, tensor: torch.Tensor) -> torch.Tensor:
    """A fake CPU tensor of ``tensor``'s shape, dtype and requires_grad (from a tensor on any device)."""
    meta = tensor.detach().to("meta")
    return mode.fake_tensor_converter.from_meta_and_device(mode, meta, "cpu").requires_grad_(tensor.requires_grad)


#: Traces already counted in this process, by model and arguments (one `peftkit estimate` traces the same model
#: for several devices and for `auto` gradient checkpointing; a 7B model's trace takes seconds).
_TRACED: OrderedDict[tuple, int] = OrderedDict()
_TRACED_KEPT = 16


def _signature(model: nn.Module) -> tuple:
    """What a trace's result depends on: the model's structure (its repr: layers, shapes, dropout rates), config,
    and every parameter's and buffer's name, shape, dtype and requires_grad."""
    config = getattr(model, "config", None)
    tensors = tuple((name, tuple(t.shape), str(t.dtype), t.requires_grad)
                    for name, t in chain(model.named_parameters(), model.named_buffers()))
    return repr(model), config.to_json_string() if hasattr(config, "to_json_string") else repr(config), tensors


def traced_activations(model: nn.Module, batch: int, seq: int, autocast: torch.dtype | None = None,
                       fused_attention: bool = False, **kwargs: Any) -> int:
    """Bytes of the tensors autograd saves for backward in one training forward of ``batch`` × ``seq`` tokens
    (parameters and views of them excluded, shared storage counted once), plus the output; ``model`` on the meta
    device or a real one, left as it is. ``autocast``: the dtype the run's mixed precision computes in (None:
    none). ``kwargs`` go to the forward (``logits_to_keep=1``: the output layer on the last position only, as
    `train.lm_loss` chunked runs it). A forward that reads tensor values raises. Repeated calls with the same
    model and arguments are answered from a small cache."""
    key = (_signature(model), batch, seq, autocast, fused_attention, tuple(sorted(kwargs.items())))
    if key not in _TRACED:
        _TRACED[key] = _trace(model, batch, seq, autocast, fused_attention, kwargs)
        while len(_TRACED) > _TRACED_KEPT:
            _TRACED.popitem(last=False)
    _TRACED.move_to_end(key)
    return _TRACED[key]


def _trace(model: nn.Module, batch: int, seq: int, autocast: torch.dtype | None, fused_attention: bool,
           kwargs: dict[str, Any]) -> int:
    mode = FakeTensorMode()
    state = {name: _fake(mode, tensor) for name, tensor in chain(model.named_parameters(), model.named_buffers())}
    parameters = {tensor.untyped_storage()._cdata for tensor in state.values()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters:
            saved[storage._cdata] = max(saved.get(storage._cdata, 0), storage.nbytes())
        return tensor

    was_training = model.training
    model.train()
    try:
        with mode, FusedAttention() if fused_attention else nullcontext(), \
                torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            ids = torch.ones(batch, seq, dtype=torch.long)
            output = torch.func.functional_call(model, state, (), {"input_ids": ids, **kwargs})
    finally:
        model.train(was_training)
    logits = output.logits if hasattr(output, "logits") else output[0]
    return sum(saved.values()) + logits.numel() * logits.element_size()
