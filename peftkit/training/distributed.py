"""Multi-process training: hand-off to torchrun, rank queries, and the recipe's DDP / FSDP / DeepSpeed settings.

``peftkit train RECIPE --nproc N`` re-runs the same command in N processes through
``torch.distributed.run`` (torchrun; accelerate's own multi-GPU launcher uses it too). ``accelerate launch
-m peftkit train RECIPE`` works as well. In every process the Trainer picks the process group up from
the launcher's environment; only rank 0 writes the run directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from torch import nn

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


def end_process_group(after_peers: bool = False) -> None:
    """Shut down this process's torch.distributed group, if one is up, while the interpreter is still whole; with
    ``after_peers`` (every process finished its work) only once all of them reach this point.

    A gloo group left to interpreter finalization can abort the process with "terminate called without an
    active exception" (SIGABRT) while its worker threads still hold tensors (pytorch/pytorch#190489, #179291);
    so did a worker that tore its group down while the main process was still saving.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if after_peers:
            dist.barrier()
        dist.destroy_process_group()


def leave_worker() -> NoReturn:
    """End this launcher's worker now with exit code 0, its output flushed, skipping interpreter finalization.

    Called once the run is saved and every process has passed ``end_process_group``. Finalization still aborted
    an FSDP worker in CI after that, now and then ("terminate called without an active exception", SIGABRT; most
    likely a native thread taking the GIL while the interpreter is torn down, as in pytorch/pytorch#179291). Every
    file of the run is written and closed, and the trackers are finished, before this point.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


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


def training_kwargs(section: DistributedSection, checkpointing: bool = False) -> dict[str, Any]:
    """TrainingArguments for the recipe's `distributed` section (ignored by transformers in one process).

    FSDP is FSDP2 through accelerate's plugin; with ``checkpointing`` (train.gradient_checkpointing resolved on)
    FSDP's own activation checkpointing replaces the Trainer's, which transformers refuses beside it."""
    if section.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise PeftkitError("'distributed.deepspeed' needs the deepspeed package: pip install deepspeed")
    kwargs: dict[str, Any] = {
        "ddp_backend": section.backend,
        "ddp_find_unused_parameters": section.find_unused_parameters,
    }
    if section.fsdp:
        config: dict[str, Any] = {
            "version": 2,
            "reshard_after_forward": section.sharding == "full_shard",
            "cpu_offload": section.cpu_offload,
            "state_dict_type": "SHARDED_STATE_DICT",  # resume from a full one hangs (accelerate 1.15, FSDP2)
            "activation_checkpointing": checkpointing,
        }
        kwargs.update(fsdp=True, fsdp_config=config)
    if section.deepspeed is not None:
        kwargs["deepspeed"] = section.deepspeed
    return kwargs


def set_wrap(model: nn.Module, section: DistributedSection) -> list[str]:
    """Make ``distributed.wrap`` the module classes FSDP shards as one unit each, returned sorted.

    accelerate and peft both wrap the classes of the model's ``_no_split_modules``, so that is where they go. By
    default those are the model's own, less any holding the input embeddings (BERT's BertEmbeddings): accelerate
    shards the embedding as a unit of its own, and sharding its parameters twice fails."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    present = {type(module).__name__: module for module in base.modules()}
    if section.wrap is None:
        embedding = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
        names = {name for name in getattr(base, "_no_split_modules", None) or () if name in present
                 and not any(module is embedding for module in present[name].modules())}
    else:
        names = set(section.wrap)
        missing = sorted(names - set(present))
        if missing:
            blocks = ", ".join(sorted(getattr(base, "_no_split_modules", None) or ())) or "none declared"
            raise PeftkitError(f"'distributed.wrap': the model has no module of class {', '.join(missing)} "
                               f"(its transformer blocks: {blocks})")
    base._no_split_modules = names
    return sorted(names)


class Fsdp:
    """Trainer mixin: FSDP2 across CPU processes (gloo) too, and full-weight saves gathered shard by shard.

    accelerate takes an FSDP plugin only for accelerator devices and silently falls back to DDP on CPUs, although
    FSDP2's ``fully_shard`` runs there; this hands the Trainer's plugin to the accelerator state as accelerate does
    on GPUs, so a run can be sharded, and tested, without one. accelerate's full state dict of an FSDP2 model
    (offloaded to the CPU) holds tensors peft's save cannot read; the weights a checkpoint or the run saves are
    gathered here instead.
    """

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()  # type: ignore[misc]
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state  # type: ignore[attr-defined]
        plugin_args = self.args.fsdp_plugin_args  # type: ignore[attr-defined]
        if plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
            return
        plugin = FullyShardedDataParallelPlugin(**plugin_args)
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        state.fsdp_plugin, state.distributed_type = plugin, DistributedType.FSDP
        self.is_fsdp_enabled = True

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self.is_fsdp_enabled:
            return super().save_model(output_dir, _internal_call)  # type: ignore[misc]
        save_gathered(self, Path(output_dir or self.args.output_dir))  # type: ignore[attr-defined]


def full_state_dict(model: nn.Module, keep: bool) -> dict[str, Any]:
    """The model's state dict with every FSDP shard gathered whole, one parameter at a time, on the CPU where
    ``keep`` (rank 0); empty elsewhere. Collective: every process calls it."""
    from torch.distributed.tensor import DTensor

    state = {}
    for name, tensor in model.state_dict().items():
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if keep:
            state[name] = full.detach().cpu().clone()
    return state


def save_gathered(trainer: Any, directory: Path) -> None:
    """Write the trained model into ``directory`` whole, as one process writes it (rank 0 writes; every process
    must call this). Checkpoints hold these weights too, beside each process's shards that resuming reads."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        trainer.save_model(str(directory))  # DeepSpeed: its own gathering
        return
    state = full_state_dict(trainer.model, keep=trainer.args.should_save)
    if trainer.args.should_save:
        trainer._save(str(directory), state_dict=state)


def is_sharded(trainer: Any) -> bool:
    """Whether the model's weights are split across processes (FSDP or DeepSpeed), so saving is collective."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))
