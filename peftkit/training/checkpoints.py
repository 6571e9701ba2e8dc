"""Checkpoints written atomically, the best one never rotated away.

transformers' Trainer writes a checkpoint (weights, optimizer, scheduler, RNG states, trainer state) straight into
``checkpoint-N``; a kill mid-save leaves a half-written directory that looks complete. Here it writes into a hidden
``.staging-checkpoint-N`` beside it and renames it into place only once everything is on disk, so every
``checkpoint-N`` is whole. Resuming (peftkit.rundir.checkpoints finds the last one) hands it to
``Trainer.train(resume_from_checkpoint=...)``, which restores all of that state and the data order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from peftkit.rundir.atomic import replace_dir
from peftkit.rundir.layout import RUN_STATE, STAGING_PREFIX, TRAINER_STATE


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
