"""Checkpoints: written atomically, found again for `--resume`, the best one never rotated away.

transformers' Trainer writes a checkpoint (weights, optimizer, scheduler, RNG states, trainer state)
straight into ``checkpoint-N``; a kill mid-save leaves a half-written directory that looks complete.
Here it writes into a hidden ``.staging-checkpoint-N`` beside it and renames it into place only once
everything is on disk, so every ``checkpoint-N`` is whole. Resuming hands the last one to
``Trainer.train(resume_from_checkpoint=...)``, which restores all of that state and the data order.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from peftkit.atomic import replace_dir
from peftkit.errors import PeftkitError
from peftkit.ownership import BOOKKEEPING
from peftkit.tracking import LOGS_DIR
from peftkit.tracking import MARKER as TRACKING_MARKER

TRAINER_STATE = "trainer_state.json"
RUN_STATE = "peftkit_state.json"  # what the Trainer does not keep: the loss summed over the whole run
STAGING_PREFIX = ".staging-"
FINISHED_MARKER = "metrics.json"  # written by training.save_run only when a run finished
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The step of a ``checkpoint-N`` directory name, or None for anything else."""
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint: a readable trainer state and safetensors weights."""
    state = path / TRAINER_STATE
    if not state.is_file() or not any(path.glob("*.safetensors")):
        return False
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def last_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint with the highest step in ``directory``; staging leftovers are ignored."""
    if not directory.is_dir():
        return None
    found = [(step, p) for p in directory.iterdir() if (step := checkpoint_step(p)) is not None and p.is_dir()]
    for _, path in sorted(found, reverse=True):
        if is_complete(path):
            return path
    return None


def resume_point(output_dir: Path, checkpoints_dir: Path, mode: str, overwrite: bool,
                 clean: bool = True) -> Path | None:
    """The checkpoint a run continues from (``train.resume: auto``), or None to start from scratch.

    A finished run is not resumed. With no complete checkpoint (killed before the first save), the
    leftovers in ``checkpoints_dir`` are removed (``clean``: this process may write) so the fresh start
    finds an empty output directory.
    """
    if mode == "never":
        return None
    if overwrite:
        raise PeftkitError("--resume and --overwrite exclude each other: resume a run or replace it, not both")
    if (output_dir / FINISHED_MARKER).is_file():
        raise PeftkitError(
            f"output_dir '{output_dir}' holds a finished run; nothing to resume "
            "(pass --overwrite to train it again, or choose another output_dir)"
        )
    checkpoint = last_checkpoint(checkpoints_dir)
    if checkpoint is None and clean and output_dir.is_dir():
        logs = output_dir / LOGS_DIR  # a tracker's logs, recognised by the marker peftkit writes into them
        ours = [checkpoints_dir, *([logs] if (logs / TRACKING_MARKER).is_file() else [])]
        if not [p for p in output_dir.iterdir() if p not in ours and p.name not in BOOKKEEPING]:
            for path in ours:
                shutil.rmtree(path, ignore_errors=True)
    return checkpoint


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class AtomicCheckpoints:
    """Trainer mixin: every checkpoint is staged in a hidden directory and renamed into place.

    ``save_total_limit`` rotation runs after the rename and always keeps the best checkpoint
    (``state.best_model_checkpoint``) and the newest one.
    """

    _staging: str | None = None
    #: Sum of the per-step training losses since step 0, resumed runs included (the Trainer's own
    #: ``training_loss`` covers only the steps of one ``train()`` call).
    run_loss_sum: float = 0.0

    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
        self.run_loss_sum = 0.0
        if resume_from_checkpoint and (Path(resume_from_checkpoint) / RUN_STATE).is_file():
            saved = json.loads((Path(resume_from_checkpoint) / RUN_STATE).read_text(encoding="utf-8"))
            self.run_loss_sum = float(saved["loss_sum"])
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)  # type: ignore[misc]

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging or super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(super()._get_output_dir(trial))  # type: ignore[misc]
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"  # type: ignore[attr-defined]
        staging = run_dir / f"{STAGING_PREFIX}{name}"
        should_save = self.args.should_save  # type: ignore[attr-defined]
        if should_save and staging.exists():
            shutil.rmtree(staging)
        _barrier()
        self._staging = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging = None
        _barrier()  # every rank has written its part (sharded optimizer / weights)
        if should_save:
            state = self.state  # type: ignore[attr-defined]
            final = run_dir / name
            (staging / name / RUN_STATE).write_text(json.dumps({"loss_sum": self.run_loss_sum}), encoding="utf-8")
            if state.best_model_checkpoint == str(staging / name):
                state.best_model_checkpoint = str(final)
                state.save_to_json(str(staging / name / TRAINER_STATE))
            replace_dir(staging / name, final)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(str(run_dir), self.args.save_total_limit,  # type: ignore[attr-defined]
                               best_model_checkpoint=state.best_model_checkpoint)
        _barrier()
