"""The recipe's `auto` settings resolved for a device; training, `peftkit estimate` and `peftkit env` all resolve here,
so the three agree:

- ``train.precision``: bf16 on a CUDA GPU with native bf16 (compute capability 8.0+, Ampere on), fp16 on an
  older CUDA GPU; on a CPU, bf16 where it has native bf16 (AMX or AVX512-BF16) and the method was measured to keep
  its accuracy there (``Method.bf16_on_cpu``: LoRA on an unquantized base), else fp32;
- ``quantization.compute_dtype``: bfloat16 where bf16 is native, float16 on an older CUDA GPU, float32 on a CPU;
- ``train.optim``: paged 8-bit AdamW for a quantized base on CUDA, fused AdamW otherwise (transformers' own
  default; on a CPU too, where torch 2.13's fused step is several times faster than the per-tensor one);
- ``train.tf32``: on for a CUDA GPU with TF32 tensor cores (Ampere on), off elsewhere;
- ``train.lm_loss``: liger where liger-kernel is installed on CUDA, else chunked, for a causal LM whose model takes
  ``logits_to_keep`` and exposes its decoder and whose method adds nothing to the model's loss, unless FSDP or
  DeepSpeed shard the weights; full otherwise;
- ``task.packing`` (causal LM): on where attention is flash_attention_2 (padding-free, variable-length kernel),
  unless the method prepends virtual tokens or data.padding pads to a fixed length;
- ``model.attn_implementation``: flash_attention_2 where flash-attn is installed, the GPU is Ampere or newer and
  the model class supports it; else sdpa where the model class supports it; else eager;
- ``train.gradient_checkpointing``: on when the predicted peak without it (and what the device reserves besides)
  exceeds the device's memory.

The policy calls the memory estimate (peftkit.hardware.estimate), never the other way round: the estimate takes a
resolved recipe.
"""

from __future__ import annotations

import inspect
from typing import Any

from peftkit.config.sections import AUTO, Recipe, auto_options
from peftkit.data.cache import is_cached
from peftkit.data.catalog import MODELS
from peftkit.hardware import device as devices
from peftkit.hardware.device import Device
from peftkit.hardware.estimate import MemoryEstimate, estimate, longest_sequence
from peftkit.model.config import model_config
from peftkit.registry import build_head, plugins


def precision(device: Device, recipe: Recipe) -> str:
    """`train.precision: auto` for ``recipe`` on ``device``."""
    if device.kind != "cuda":
        return "bf16" if device.cpu_bf16 and plugins(recipe)[1].bf16_on_cpu(recipe) else "fp32"
    return "bf16" if device.bf16 else "fp16"


def compute_dtype(device: Device) -> str:
    """`quantization.compute_dtype: auto` on ``device``: the half precision its autocast runs in on a GPU."""
    if device.kind != "cuda":
        return "float32"
    return "bfloat16" if device.bf16 else "float16"


def optim(device: Device, quantized: bool) -> str:
    """`train.optim: auto` on ``device``, for a quantized base or not."""
    return "paged_adamw_8bit" if quantized and device.kind == "cuda" else "adamw_torch_fused"


def tf32(device: Device) -> bool:
    """`train.tf32: auto` on ``device``: TF32 tensor cores come with compute capability 8.0 (Ampere)."""
    return device.bf16


def lm_loss(recipe: Recipe, device: Device, model_class: type | None) -> str:
    """`train.lm_loss: auto`: the causal LM loss that never holds full-vocabulary fp32 logits, where the model
    lets it (``logits_to_keep`` to skip its own output layer); ``full`` for other heads and models, where the
    method adds to the model's own loss (AdaLoRA's orthogonality penalty), and under FSDP / DeepSpeed, whose
    sharded output layer is gathered only inside the model's forward."""
    sharded = recipe.distributed.fsdp or recipe.distributed.deepspeed  # the output layer is gathered in forward only
    if (build_head(recipe.task).kind != "causal_lm" or not chunkable(model_class) or sharded
            or plugins(recipe)[1].adds_to_model_loss):
        return "full"
    return "liger" if device.kind == "cuda" and devices.liger_installed() else "chunked"


def chunkable(model_class: type | None) -> bool:
    """Whether ``model_class``'s forward can skip its output layer (``logits_to_keep``) and has a decoder to read
    the hidden states from; unknown class: no."""
    if model_class is None or not hasattr(model_class, "get_decoder"):
        return False
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def packing(recipe: Recipe) -> bool:
    """`task.packing: auto`: padding-free batches where attention is flash_attention_2, whose variable-length
    kernel attends within each example; sdpa and eager would mask one (batch × length)² block instead, more
    attention work than the padding (little, with train.group_by_length) that packing saves. Off where the data
    pads to a fixed length or the method refuses packing (virtual tokens)."""
    if recipe.model.attn_implementation != "flash_attention_2" or recipe.data.padding != "dynamic":
        return False
    method = plugins(recipe)[1]
    packed, unpacked = recipe.model_copy(deep=True), recipe.model_copy(deep=True)
    packed.task.packing, unpacked.task.packing = True, False
    return method.refusal(packed) == method.refusal(unpacked)


def _model_class(recipe: Recipe) -> type | None:
    """The transformers class the recipe's head builds for its model, or None when it cannot be told offline."""
    if recipe.model.name in MODELS and not is_cached("model", recipe.model.name):
        return None  # resolving never downloads; a run fetches the model before it resolves
    head = build_head(recipe.task)
    try:
        config = model_config(recipe.model)
        return head.auto_class._model_mapping[type(config)]
    except Exception:  # unreachable hub id, unknown architecture: the caller falls back to sdpa / eager
        return None


def supports(model_class: type | None, implementation: str) -> bool:
    """Whether ``model_class`` declares support for an attention implementation (unknown class: sdpa yes)."""
    if model_class is None:
        return implementation == "sdpa"
    if implementation == "flash_attention_2":
        return bool(getattr(model_class, "_supports_flash_attn", False)
                    or getattr(model_class, "_supports_flash_attn_2", False))
    if implementation == "sdpa":
        return bool(getattr(model_class, "_supports_sdpa", False))
    return True


def attn_implementation(device: Device, model_class: type | None, flash_installed: bool | None = None) -> str:
    """`model.attn_implementation: auto` for ``model_class`` on ``device``."""
    flash = devices.flash_attn_installed() if flash_installed is None else flash_installed
    if flash and device.bf16 and supports(model_class, "flash_attention_2"):
        return "flash_attention_2"
    return "sdpa" if supports(model_class, "sdpa") else "eager"


def resolve_settings(recipe: Recipe, device: Device) -> dict[str, Any]:
    """Resolve every `auto` but gradient checkpointing in place; returns {dotted key: value} of what was auto."""
    resolved: dict[str, Any] = {}
    train, quant, model = recipe.train, recipe.quantization, recipe.model
    if train.precision == AUTO:
        train.precision = resolved["train.precision"] = precision(device, recipe)
    if quant.compute_dtype == AUTO:
        quant.compute_dtype = resolved["quantization.compute_dtype"] = compute_dtype(device)
    if train.optim == AUTO:
        train.optim = resolved["train.optim"] = optim(device, quant.mode != "none")
    model_class = _model_class(recipe) if AUTO in (model.attn_implementation, train.lm_loss) else None
    if model.attn_implementation == AUTO:
        model.attn_implementation = resolved["model.attn_implementation"] = attn_implementation(device, model_class)
    if train.tf32 == AUTO:
        train.tf32 = resolved["train.tf32"] = tf32(device)
    if train.lm_loss == AUTO:
        train.lm_loss = resolved["train.lm_loss"] = lm_loss(recipe, device, model_class)
    if getattr(recipe.task, "packing", None) == AUTO:
        recipe.task.packing = resolved["task.packing"] = packing(recipe)
    return resolved


def resolve_checkpointing(recipe: Recipe, device: Device, sequence_length: int | None = None,
                          labels: list[str] | None = None, processes: int = 1) -> dict[str, Any]:
    """Resolve `train.gradient_checkpointing: auto` in place: on when the predicted peak without it (per process of
    ``processes``: FSDP shards the model) exceeds ``device.memory``. Call after :func:`resolve_settings`."""
    if recipe.train.gradient_checkpointing != AUTO:
        return {}
    trial = recipe.model_copy(deep=True)
    trial.train.gradient_checkpointing = False
    peak = estimate(trial, sequence_length, labels, device=device, processes=processes).needed
    recipe.train.gradient_checkpointing = bool(device.memory) and peak > device.memory
    return {"train.gradient_checkpointing": recipe.train.gradient_checkpointing}


def resolve(recipe: Recipe, device: Device, sequence_length: int | None = None,
            labels: list[str] | None = None) -> dict[str, Any]:
    """Resolve every `auto` of ``recipe`` in place for ``device``; returns {dotted key: value} of what was auto."""
    resolved = resolve_settings(recipe, device)
    resolved.update(resolve_checkpointing(recipe, device, sequence_length, labels))
    return resolved


def resolved_for(recipe: Recipe, device: Device, sequence_length: int | None = None,
                 labels: list[str] | None = None) -> Recipe:
    """A copy of ``recipe`` with every `auto` resolved for ``device`` (``recipe`` itself when nothing is `auto`)."""
    if is_resolved(recipe):
        return recipe
    copy = recipe.model_copy(deep=True)
    resolve(copy, device, sequence_length, labels)
    return copy


def is_resolved(recipe: Recipe) -> bool:
    """Whether no option of ``recipe`` is left at `auto`."""
    return not auto_options(recipe)


def estimate_on(recipe: Recipe, device: Device | None = None, sequence_length: int | None = None,
                labels: list[str] | None = None) -> MemoryEstimate:
    """The predicted peak of ``recipe`` on ``device`` (default: this machine's), its `auto` options resolved for
    it first; the data is tokenized once to find the longest batch unless ``sequence_length`` and ``labels`` are
    given."""
    device = device or devices.current()
    if sequence_length is None or labels is None:
        head = build_head(recipe.task)
        sequence_length, found = longest_sequence(recipe, head)
        labels = labels or found
    return estimate(resolved_for(recipe, device, sequence_length, labels), sequence_length, labels, device=device)
