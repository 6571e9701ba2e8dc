"""Complete checkpoints in a run directory: found again for `--resume`, for `peftkit runs` and for messages."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peftkit.errors import PeftkitError
from peftkit.rundir.layout import BOOKKEEPING, LOGS_DIR, METRICS_FILE, RUN_STATE, TRACKING_MARKER, TRAINER_STATE

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


def finished_training(checkpoint: Path) -> dict[str, Any] | None:
    """The run state (``loss_sum``, ``finished``: seconds, samples_per_second, transient) of a checkpoint kept once
    training had finished, or None for one written while it trained."""
    path = checkpoint / RUN_STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PeftkitError(f"checkpoint file '{path}' is unreadable ({exc}); delete the folder '{checkpoint}' to "
                           "resume from the checkpoint before it") from None
    if not isinstance(state, dict) or not isinstance(state.get("loss_sum"), (int, float)):
        raise PeftkitError(f"checkpoint file '{path}' has no number 'loss_sum'; delete the folder '{checkpoint}' "
                           "to resume from the checkpoint before it")
    return state if isinstance(state.get("finished"), dict) else None


def remove_checkpoint(checkpoint: Path) -> None:
    """Delete a checkpoint peftkit wrote, and the checkpoints folder when that leaves it empty."""
    shutil.rmtree(checkpoint, ignore_errors=True)
    if checkpoint.parent.is_dir() and not any(checkpoint.parent.iterdir()):
        checkpoint.parent.rmdir()


def resume_point(output_dir: Path, checkpoints_dir: Path, mode: str, overwrite: bool,
                 clean: bool = True) -> Path | None:
    """The checkpoint a run continues from (``train.resume: auto``), or None to start from scratch.

    A finished run is not resumed; a checkpoint kept after its last training step (`finished_training`) is
    evaluated and saved, not trained on. With no complete checkpoint (killed before the first save), the
    leftovers in ``checkpoints_dir`` are removed (``clean``: this process may write) so the fresh start
    finds an empty output directory.
    """
    if mode == "never":
        return None
    if overwrite:
        raise PeftkitError("--resume and --overwrite exclude each other: resume a run or replace it, not both")
    if (output_dir / METRICS_FILE).is_file():
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
