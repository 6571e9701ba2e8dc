"""What this machine can run, and the recipe's `auto` settings resolved for it.

Training, `peftkit estimate` and `peftkit env` all read the device and resolve `auto` here, so the three agree:

- ``train.precision``: bf16 on a CUDA GPU with native bf16 (compute capability 8.0+, Ampere on), fp16 on an
  older CUDA GPU, fp32 on a CPU;
- ``quantization.compute_dtype``: bfloat16 where bf16 is native, else float32;
- ``train.optim``: paged 8-bit AdamW for a quantized base on CUDA, AdamW otherwise;
- ``model.attn_implementation``: flash_attention_2 where flash-attn is installed, the GPU is Ampere or newer and
  the model class supports it; else sdpa where the model class supports it; else eager;
- ``train.gradient_checkpointing``: on when the predicted peak without it exceeds the device's memory.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from peftkit.recipe import Recipe

AUTO = "auto"
GIB = 2**30
#: The GPUs `peftkit estimate` answers for besides this machine's devices: an Ampere-class 24 GB and 80 GB card.
REFERENCE_GPUS = (("24 GB GPU", 24 * GIB), ("80 GB GPU", 80 * GIB))


@dataclass(frozen=True)
class Device:
    """One device a run can train on."""

    kind: Literal["cpu", "cuda"]
    name: str
    memory: int  # bytes
    capability: tuple[int, int] | None = None  # CUDA compute capability

    @property
    def bf16(self) -> bool:
        """Native bf16: a CUDA GPU of compute capability 8.0 or newer (older ones only emulate it, slowly)."""
        return self.kind == "cuda" and self.capability is not None and self.capability >= (8, 0)

    @property
    def label(self) -> str:
        where = f"cuda (sm {self.capability[0]}.{self.capability[1]})" if self.capability else self.kind
        return f"{self.name} [{where}]"


def cpu_memory() -> int:
    """Physical memory of this machine in bytes (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def cuda_devices() -> list[Device]:
    """Every visible CUDA GPU with its name, memory and compute capability."""
    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append(Device("cuda", props.name, int(props.total_memory),
                            tuple(torch.cuda.get_device_capability(index))))
    return found


def current() -> Device:
    """The device a run started here trains on: the first CUDA GPU, else the CPU."""
    gpus = cuda_devices()
    return gpus[0] if gpus else Device("cpu", "cpu", cpu_memory())


def all_devices() -> list[Device]:
    """This machine's CUDA GPUs followed by its CPU."""
    return [*cuda_devices(), Device("cpu", "cpu", cpu_memory())]


def reference_gpus() -> list[Device]:
    """Hypothetical Ampere-class GPUs (24 GB, 80 GB) that estimates are also given for."""
    return [Device("cuda", name, memory, (8, 0)) for name, memory in REFERENCE_GPUS]


def flash_attn_installed() -> bool:
    """Whether the flash-attn package (FlashAttention 2) is importable."""
    return importlib.util.find_spec("flash_attn") is not None


def precision(device: Device) -> str:
    """`train.precision: auto` on ``device``."""
    if device.kind != "cuda":
        return "fp32"
    return "bf16" if device.bf16 else "fp16"


def compute_dtype(device: Device) -> str:
    """`quantization.compute_dtype: auto` on ``device``."""
    return "bfloat16" if device.bf16 else "float32"


def optim(device: Device, quantized: bool) -> str:
    """`train.optim: auto` on ``device``, for a quantized base or not."""
    return "paged_adamw_8bit" if quantized and device.kind == "cuda" else "adamw_torch"


def _model_class(recipe: Recipe) -> type | None:
    """The transformers class the recipe's head builds for its model, or None when it cannot be told offline."""
    from peftkit.data.cache import is_cached
    from peftkit.data.catalog import MODELS
    from peftkit.modeling import model_config
    from peftkit.registry import HEADS

    if recipe.model.name in MODELS and not is_cached("model", recipe.model.name):
        return None  # resolving never downloads; a run fetches the model before it resolves
    head = HEADS.get(recipe.task.head)(recipe.task)
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
    flash = flash_attn_installed() if flash_installed is None else flash_installed
    if flash and device.bf16 and supports(model_class, "flash_attention_2"):
        return "flash_attention_2"
    return "sdpa" if supports(model_class, "sdpa") else "eager"


def resolve_settings(recipe: Recipe, device: Device) -> dict[str, Any]:
    """Resolve every `auto` but gradient checkpointing in place; returns {dotted key: value} of what was auto."""
    resolved: dict[str, Any] = {}
    train, quant, model = recipe.train, recipe.quantization, recipe.model
    if train.precision == AUTO:
        train.precision = resolved["train.precision"] = precision(device)
    if quant.compute_dtype == AUTO:
        quant.compute_dtype = resolved["quantization.compute_dtype"] = compute_dtype(device)
    if train.optim == AUTO:
        train.optim = resolved["train.optim"] = optim(device, quant.mode != "none")
    if model.attn_implementation == AUTO:
        model.attn_implementation = resolved["model.attn_implementation"] = attn_implementation(
            device, _model_class(recipe))
    return resolved


def resolve_checkpointing(recipe: Recipe, device: Device, sequence_length: int | None = None,
                          labels: list[str] | None = None) -> dict[str, Any]:
    """Resolve `train.gradient_checkpointing: auto` in place: on when the predicted peak without it exceeds
    ``device.memory``. Call after :func:`resolve_settings`."""
    if recipe.train.gradient_checkpointing != AUTO:
        return {}
    from peftkit.estimate import estimate

    trial = recipe.model_copy(deep=True)
    trial.train.gradient_checkpointing = False
    peak = estimate(trial, sequence_length, labels, device=device).total
    recipe.train.gradient_checkpointing = bool(device.memory) and peak > device.memory
    return {"train.gradient_checkpointing": recipe.train.gradient_checkpointing}


def resolve(recipe: Recipe, device: Device, sequence_length: int | None = None,
            labels: list[str] | None = None) -> dict[str, Any]:
    """Resolve every `auto` of ``recipe`` in place for ``device``; returns {dotted key: value} of what was auto."""
    resolved = resolve_settings(recipe, device)
    resolved.update(resolve_checkpointing(recipe, device, sequence_length, labels))
    return resolved


def is_resolved(recipe: Recipe) -> bool:
    """Whether no option of ``recipe`` is left at `auto`."""
    return AUTO not in (recipe.train.precision, recipe.quantization.compute_dtype, recipe.train.optim,
                        recipe.model.attn_implementation, recipe.train.gradient_checkpointing)
