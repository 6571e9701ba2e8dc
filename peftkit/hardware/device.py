"""What this machine has: its CUDA GPUs (name, memory, compute capability), its CPU memory, flash-attn."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Literal

import torch

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
    cpu_bf16: bool = False  # a CPU with native bf16 matrix instructions (AMX or AVX512-BF16)

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
    return gpus[0] if gpus else cpu()


def cpu() -> Device:
    """This machine's CPU, with its memory and whether it computes bf16 natively."""
    return Device("cpu", "cpu", cpu_memory(), cpu_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


def all_devices() -> list[Device]:
    """This machine's CUDA GPUs followed by its CPU."""
    return [*cuda_devices(), cpu()]


def reference_gpus() -> list[Device]:
    """Hypothetical Ampere-class GPUs (24 GB, 80 GB) that estimates are also given for."""
    return [Device("cuda", name, memory, (8, 0)) for name, memory in REFERENCE_GPUS]


def flash_attn_installed() -> bool:
    """Whether the flash-attn package (FlashAttention 2) is importable."""
    return importlib.util.find_spec("flash_attn") is not None


def liger_installed() -> bool:
    """Whether liger-kernel (its fused linear cross-entropy) is importable."""
    return importlib.util.find_spec("liger_kernel") is not None


def flash_attention_usable() -> bool:
    """Whether this machine can run flash_attention_2 at all: a CUDA GPU and the flash-attn package."""
    return torch.cuda.is_available() and flash_attn_installed()
