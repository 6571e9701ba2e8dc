"""A run's metrics file: reading it back, the Trainer's prefixed keys, and which keys are timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftkit.errors import PeftkitError
from peftkit.registry import HEADS
from peftkit.rundir.layout import METRICS_FILE
from peftkit.rundir.readback import damaged, json_kind, read_json_object

#: The Trainer's timing figures: left out of metric tables, cards and trackers' test scalars.
TIMING_KEYS = frozenset({"runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"})
#: The built-in heads' main metrics, for results whose head is not registered here (a plugin's) or not known.
FALLBACK_METRICS = ("accuracy", "f1", "token_loss")
#: The sections of a metrics file that peftkit reads as objects of name → value.
SECTIONS = ("test", "train", "parameters")


def main_metric(head: str | None, test: dict[str, Any]) -> str | None:
    """The metric a run is judged by among ``test``: its head's main metric, else the first fallback present."""
    name = HEADS.get(head).main_metric if head is not None and head in HEADS.names() else None
    return name if name in test else next((m for m in FALLBACK_METRICS if m in test), None)


def split_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Trainer's `eval_accuracy`-style keys without their prefix."""
    return {k.removeprefix(prefix + "_"): v for k, v in metrics.items()}


def saved_metrics(directory: str | Path) -> dict[str, Any]:
    """The metrics a run wrote when it finished training: a JSON object whose sections are objects.

    Values are not checked: a run that diverged wrote NaN itself, and plugins' heads add their own kinds.
    """
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        raise PeftkitError(f"'{directory}' has no {METRICS_FILE}: the run did not finish")
    metrics = read_json_object(directory, METRICS_FILE)
    for section in SECTIONS:
        value = metrics.get(section, {})
        if not isinstance(value, dict):
            raise damaged(directory, METRICS_FILE, f"holds {json_kind(value)} as '{section}', expected an object")
    return metrics
