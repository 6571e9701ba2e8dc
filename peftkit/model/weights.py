"""Weights on disk: safetensors only (pickles can run code), and the mapped checkpoint released after loading.

The other safety rules live where the thing is done: recipes are parsed with a guarded ``yaml.SafeLoader``
(peftkit.config.files: no alias bombs, no self-referencing aliases), ``trust_remote_code`` is false unless a
recipe sets it, plugins come only from installed entry points (peftkit.registry), and the Trainer reads its own
optimizer / RNG state with ``torch.load(weights_only=True)``. What --overwrite may delete: peftkit.rundir.ownership."""

from __future__ import annotations

import gc
from pathlib import Path

from torch import nn

from peftkit.errors import PeftkitError

#: Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(directory: str | Path, what: str) -> None:
    """Refuse a local model / adapter directory whose weights exist only as pickles.

    ``what`` names the culprit in the message, e.g. ``"model.name 'x'"`` or ``"run 'runs/y'"``.
    A directory with no weights at all is left to the loader, which names what is missing.
    """
    directory = Path(directory)
    if not directory.is_dir() or any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PeftkitError(
            f"{what}: weights only as pickle ({', '.join(pickles)}); peftkit loads safetensors only, since "
            "unpickling can run code — convert them with safetensors (save_pretrained(safe_serialization=True))"
        )


MAPS_FILE = Path("/proc/self/maps")


def mapped_files(suffix: str = ".safetensors") -> dict[str, list[tuple[int, int]]]:
    """Address ranges of this process's file mappings whose path ends with ``suffix`` (Linux; else empty)."""
    found: dict[str, list[tuple[int, int]]] = {}
    try:
        lines = MAPS_FILE.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].endswith(suffix):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.setdefault(parts[5], []).append((start, end))
    return found


def release_checkpoint(model: nn.Module) -> int:
    """Copy into private memory every parameter and buffer of ``model`` that is still a view of a mapped
    safetensors file, so the file is unmapped once nothing else holds it; returns how many were copied.

    transformers reads checkpoints through mmap and keeps tensors it did not convert as views of the file. On
    a quantized load every page of the float32 file was read to quantize it, and the whole file stays mapped and
    resident for the sake of a few tensors (embeddings, norms, skipped modules). Unquantized, a frozen base would
    be held as file pages that memory accounting does not see as the run's own. Copied, every weight a run holds
    is private memory, as it is on a GPU.
    """
    ranges = [r for spans in mapped_files().values() for r in spans]
    if not ranges:
        return 0
    copied = 0
    for module in model.modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for _, tensor in tensors:
            pointer = tensor.data_ptr()
            if tensor.device.type == "cpu" and any(start <= pointer < end for start, end in ranges):
                tensor.data = tensor.data.clone()
                copied += 1
    gc.collect()
    return copied
