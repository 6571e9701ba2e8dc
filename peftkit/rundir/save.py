"""A finished run written into its directory: staged, declared in the manifest, moved into place; rescued
elsewhere when that fails."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import Trainer

from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.methods.base import Method
from peftkit.rundir import atomic, ownership
from peftkit.rundir.cards import write_model_card
from peftkit.rundir.checkpoints import finished_training, last_checkpoint
from peftkit.rundir.layout import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    RECIPE_FILE,
    RUN_FILES,
    STAGING_DIR,
    WORKING_ENTRIES,
)
from peftkit.rundir.plot import eval_history, write_run_plot


def save_run_or_rescue(recipe: Recipe, trainer: Trainer, method: Method, output_dir: Path,
                       metrics: dict[str, Any], weights: Path | None = None) -> None:
    """``save_run``; when it fails, whatever the cause (a full disk, a file name the card cannot hold, a
    folder that changed hands), save the run in the temporary folder instead, or point to the last checkpoint,
    and say where in a one-line error."""
    try:
        save_run(recipe, trainer, method, output_dir, metrics, weights=weights)
        return
    except ownership.DestinationChanged as exc:  # output_dir is not what was checked: nothing to tidy in it
        failure = str(exc)
    except Exception as exc:  # the trained model must outlive any failure of its save
        shutil.rmtree(output_dir / STAGING_DIR, ignore_errors=True)
        failure = str(exc) if isinstance(exc, PeftkitError) else (
            f"saving the run to '{output_dir}' failed: {_reason(exc)}")
    except KeyboardInterrupt:  # aborted: its staged files go, the caller says what is kept
        shutil.rmtree(output_dir / STAGING_DIR, ignore_errors=True)
        raise
    rescue = None
    try:
        rescue = Path(tempfile.mkdtemp(prefix=f"peftkit-rescued-{output_dir.name}-"))
        ownership.record(rescue, "run", WORKING_ENTRIES)
        save_run(recipe, trainer, method, rescue, metrics, weights=weights)
        kept = (f"the trained run was saved to '{rescue}' instead (`peftkit eval {rescue}` works on it); "
                "move it where you want it once there is space")
    except KeyboardInterrupt:
        if rescue is not None:
            shutil.rmtree(rescue, ignore_errors=True)
        raise
    except Exception:
        if rescue is not None:
            shutil.rmtree(rescue, ignore_errors=True)
        checkpoint = last_checkpoint(output_dir / CHECKPOINTS_DIR)
        finish = ("evaluate and save it without training again" if checkpoint and finished_training(checkpoint)
                  else "finish")
        kept = (f"its last checkpoint '{checkpoint}' is kept: fix the cause (free some space) and run the same "
                f"command with --resume to {finish}" if checkpoint else
                "saving it elsewhere failed too and there is no checkpoint (train.save_strategy) to fall back on")
    raise PeftkitError(f"{failure}; {kept}")


def _reason(exc: Exception) -> str:
    """An OSError's own words ("No space left on device"); otherwise the exception's type and message."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return strerror
    return str(exc) if isinstance(exc, SafetensorError) else f"{type(exc).__name__}: {exc}"


def save_run(recipe: Recipe, trainer: Trainer, method: Method, output_dir: Path, metrics: dict[str, Any],
             weights: Path | None = None) -> None:
    """Write the trained weights, tokenizer, resolved recipe, metrics and model card.

    Everything goes to a staging directory first and is moved into place file by file, so an
    interrupted save never leaves a half-written file behind. ``weights``: a directory that
    ``Trainer.save_model`` filled (sharded runs), used instead of the method's own save.

    ``output_dir`` is checked again first and right before the files move: it must still be the directory
    this process locked (not moved away, replaced or a new symlink), and no file the save would replace may
    be one its manifest does not list; otherwise DestinationChanged, with nothing written there.
    """
    lock = ownership.DirectoryLock.held(output_dir)
    if lock is not None:
        lock.check_unchanged()
    _check_replaceable(output_dir, [*RUN_FILES, *(p.name for p in weights.iterdir())] if weights else RUN_FILES)
    staging = output_dir / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    if weights is None:
        method.save(trainer.model, staging)
    else:
        for item in weights.iterdir():
            if item.name != "training_args.bin":
                item.replace(staging / item.name)
        shutil.rmtree(weights)
    trainer.processing_class.save_pretrained(staging)
    (staging / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
    metrics["adapter_bytes"] = sum(
        p.stat().st_size for p in staging.iterdir() if p.suffix == ".safetensors"
    )
    metrics.setdefault("eval_history", eval_history(trainer.state.log_history))
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    write_model_card(staging, recipe, metrics, output_dir)
    write_run_plot(staging, metrics, output_dir)
    if lock is not None:
        lock.check_unchanged()  # moved or replaced meanwhile: the staging folder is not ours to delete any more
    try:
        _check_replaceable(output_dir, [p.name for p in staging.iterdir()])
    except ownership.DestinationChanged:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic.ordinary_modes(staging)  # the weights' library may write them private, as temporary files
    ownership.record(output_dir, "run", [p.name for p in staging.iterdir()])  # declared before they land
    for item in staging.iterdir():
        item.replace(output_dir / item.name)
    staging.rmdir()
    checkpoints = output_dir / CHECKPOINTS_DIR
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()


def _check_replaceable(output_dir: Path, names: list[str]) -> None:
    """Refuse (DestinationChanged) when one of ``names`` exists in ``output_dir`` but its manifest does not list
    it: a file of the user's, which the save must not replace."""
    try:
        manifest = ownership.read_manifest(output_dir)
    except PeftkitError as exc:
        raise ownership.DestinationChanged(str(exc)) from None
    owned = set(manifest["entries"]) if manifest else set()
    foreign = sorted({n for n in names if n not in owned and os.path.lexists(output_dir / n)})
    if foreign:
        raise ownership.DestinationChanged(
            f"output_dir '{output_dir}' holds {', '.join(foreign)}, which peftkit did not write; the final save "
            "does not replace it, so nothing was saved there"
        )
