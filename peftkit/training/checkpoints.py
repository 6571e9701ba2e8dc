"""Checkpoints written atomically, the best one never rotated away.

transformers' Trainer writes a checkpoint (weights, optimizer, scheduler, RNG states, trainer state) straight into
``checkpoint-N``; a kill mid-save leaves a half-written directory that looks complete. Here it writes into a hidden
``.staging-checkpoint-N`` beside it and renames it into place only once everything is on disk, so every
``checkpoint-N`` is whole. Resuming (peftkit.rundir.checkpoints finds the last one) hands it to
``Trainer.train(resume_from_checkpoint=...)``, which restores all of that state and the data order.

Once training has finished, the checkpoint at its last step is marked finished (one is written, weights only, when
the Trainer saved none there), so a failure or Ctrl-C while the run is evaluated and saved loses nothing and
``--resume`` evaluates that checkpoint instead of training again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from peftkit.rundir.atomic import replace_dir, write_text
from peftkit.rundir.checkpoints import finished_training, last_checkpoint
from peftkit.rundir.layout import RUN_STATE, STAGING_PREFIX, TRAINER_STATE
from peftkit.rundir.ownership import DestinationChanged


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

    def keep_trained(self, finished: dict[str, Any], check: Callable[[], None] | None = None) -> Path:
        """After ``train()``: the checkpoint of the final step, marked ``finished`` (the training's figures); written
        (weights and trainer state only; ``finished["transient"]`` set: removed once the run is saved) when the
        Trainer saved none at that step. Every process calls it; ``check`` (the writing one's) raises when the run
        directory may no longer be written, before anything is written and before it lands."""
        run_dir = Path(self.args.output_dir)  # type: ignore[attr-defined]
        state = self.state  # type: ignore[attr-defined]
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        made = last_checkpoint(run_dir) != final
        staging = run_dir / f"{STAGING_PREFIX}{final.name}"
        should_save = self.args.should_save  # type: ignore[attr-defined]
        finished["transient"] = made
        try:
            if should_save and check is not None:
                check()
            if made:
                if should_save and staging.exists():
                    shutil.rmtree(staging)
                self.save_model(str(staging))  # type: ignore[attr-defined]  # collective for sharded weights
            if should_save:
                if check is not None:
                    check()
                run_state = json.dumps({"loss_sum": self.run_loss_sum, "finished": finished})
                if made:
                    state.save_to_json(str(staging / TRAINER_STATE))
                    (staging / RUN_STATE).write_text(run_state, encoding="utf-8")
                    replace_dir(staging, final)
                else:
                    write_text(final / RUN_STATE, run_state)
        except DestinationChanged:
            raise  # not ours any more: nothing there to tidy
        except BaseException:
            if should_save:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            _barrier()
        return final

    def restore_trained(self, checkpoint: Path) -> dict[str, Any]:
        """Load a finished checkpoint's trainer state, loss sum and weights (the best checkpoint's with
        ``load_best_model_at_end``, as ``train()`` would) without training; returns its ``finished`` record."""
        run_state = finished_training(checkpoint)
        if run_state is None:
            raise ValueError(f"{checkpoint} was not kept after training finished")
        self.state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE))
        best = self.state.best_model_checkpoint
        use_best = self.args.load_best_model_at_end and best and Path(best).is_dir()  # type: ignore[attr-defined]
        self._load_from_checkpoint(best if use_best else str(checkpoint))  # type: ignore[attr-defined]
        self.run_loss_sum = float(run_state["loss_sum"])
        return run_state["finished"]
