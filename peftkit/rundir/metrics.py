"""A run's metrics file: reading it back, the Trainer's prefixed keys, and which keys are timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftkit.errors import PeftkitError
from peftkit.rundir.layout import METRICS_FILE

TIMING_KEYS = {"runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"}


def split_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Trainer's `eval_accuracy`-style keys without their prefix."""
    return {k.removeprefix(prefix + "_"): v for k, v in metrics.items()}


def saved_metrics(directory: str | Path) -> dict[str, Any]:
    """The metrics a run wrote when it finished training."""
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        raise PeftkitError(f"'{directory}' has no {METRICS_FILE}: the run did not finish")
    return json.loads(path.read_text(encoding="utf-8"))
