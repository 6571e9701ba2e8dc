"""Multi-process training: hand-off to torchrun, rank queries, and the recipe's DDP / FSDP / DeepSpeed settings.

``peftkit train RECIPE --nproc N`` re-runs the same command in N processes through
``torch.distributed.run`` (torchrun; accelerate's own multi-GPU launcher uses it too). ``accelerate launch
-m peftkit train RECIPE`` works as well. In every process the Trainer picks the process group up from
the launcher's environment; only rank 0 writes the run directory.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

from peftkit.config.sections import DistributedSection
from peftkit.errors import PeftkitError


def world_size() -> int:
    """Number of processes of this run as the launcher set it (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """Global rank of this process (0 outside a launcher)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes outputs: rank 0, or the only process."""
    return rank() == 0


def launch_args(nproc: int, argv: Sequence[str]) -> list[str]:
    """torchrun's arguments that run ``python -m peftkit <argv>`` in ``nproc`` local processes."""
    return ["--standalone", f"--nproc-per-node={nproc}", "--module", "peftkit", *argv]


def launch(nproc: int, argv: Sequence[str]) -> None:
    """Run ``peftkit <argv>`` in ``nproc`` processes on this machine via torchrun; wait for all of them.

    A worker that fails (a user error exits 2 and prints its one line) stops all of them and raises
    one PeftkitError here.
    """
    if nproc < 1:
        raise PeftkitError(f"--nproc must be at least 1, got {nproc}")
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = f"{gpus} GPU(s)" if gpus else f"{os.cpu_count() or 1} CPU core(s)"
    if nproc > (gpus or os.cpu_count() or 1):
        raise PeftkitError(f"--nproc {nproc}: this machine has {devices}; run at most one process per "
                           f"{'GPU' if gpus else 'core'}")
    if world_size() > 1:
        raise PeftkitError("--nproc given inside a multi-process launch; drop it or the outer launcher")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # share the cores
    try:
        run(get_args_parser().parse_args(launch_args(nproc, argv)))
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        codes = [code for code in codes if code > 0] or codes  # drop the workers the launcher stopped (-SIGTERM)
        raise PeftkitError(
            f"train --nproc {nproc}: a worker process failed (exit code {', '.join(map(str, codes))}); "
            "its error is printed above"
        ) from None


def training_kwargs(section: DistributedSection) -> dict[str, Any]:
    """TrainingArguments for the recipe's `distributed` section (ignored by transformers in one process)."""
    if section.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise PeftkitError("'distributed.deepspeed' needs the deepspeed package: pip install deepspeed")
    kwargs: dict[str, Any] = {
        "ddp_backend": section.backend,
        "ddp_find_unused_parameters": section.find_unused_parameters,
    }
    if section.fsdp:
        kwargs["fsdp"] = section.fsdp
        kwargs["fsdp_config"] = dict(section.fsdp_config) or None
    if section.deepspeed is not None:
        kwargs["deepspeed"] = section.deepspeed
    return kwargs


def is_sharded(trainer: Any) -> bool:
    """Whether the model's weights are split across processes (FSDP or DeepSpeed), so saving is collective."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))
