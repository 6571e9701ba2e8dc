"""Pictures of runs: the training loss and evaluation curves of one or several runs on one figure (matplotlib)."""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftkit.errors import PeftkitError, first_line
from peftkit.rundir import atomic, ownership
from peftkit.rundir.layout import CURVES_FILE, METRICS_FILE
from peftkit.rundir.metrics import TIMING_KEYS
from peftkit.rundir.readback import damaged, json_kind

#: The files `peftkit plot` writes, by suffix.
FORMATS = (".png", ".svg")


def eval_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Trainer's evaluations (``log_history`` entries with ``eval_loss``): step and every ``eval_*`` number,
    timings left out; what metrics.json keeps as ``eval_history``."""
    timings = {f"eval_{k}" for k in TIMING_KEYS}
    return [{"step": e["step"], **{k: v for k, v in e.items() if k.startswith("eval_") and k not in timings
                                   and isinstance(v, (int, float)) and not isinstance(v, bool)}}
            for e in log_history if "eval_loss" in e]


def _points(run: str | Path, metrics: dict[str, Any], section: str, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` in the list ``metrics[section]`` (read back from the run's metrics.json, so each
    entry is checked); entries without ``key`` or with a value that is not finite (a diverged run) are skipped."""
    entries = metrics.get(section, [])
    if not isinstance(entries, list):
        raise damaged(run, METRICS_FILE, f"holds {json_kind(entries)} as '{section}', expected a list")
    steps, values = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise damaged(run, METRICS_FILE, f"'{section}[{i}]' is {json_kind(entry)}, expected an object")
        if key not in entry:
            continue
        step, value = entry.get("step"), entry[key]
        for name, number in (("step", step), (key, value)):
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise damaged(run, METRICS_FILE, f"'{section}[{i}].{name}' is {json_kind(number)}, expected a number")
        if math.isfinite(value) and math.isfinite(step):
            steps.append(float(step))
            values.append(float(value))
    return steps, values


#: One curve: its label, steps and values.
Curve = tuple[str, list[float], list[float]]


def curves(run: str | Path, metrics: dict[str, Any], metric: str = "loss") -> list[Curve]:
    """The curves of ``metric`` in one run's metrics: ``loss`` gives the training loss and, where the run
    evaluated, the validation loss; ``eval_<name>`` gives that validation score. (label, steps, values) each."""
    if metric == "loss":
        found = [("train loss", *_points(run, metrics, "loss_history", "loss")),
                 ("eval loss", *_points(run, metrics, "eval_history", "eval_loss"))]
    elif metric.startswith("eval_"):
        found = [(metric.removeprefix("eval_").replace("_", " "), *_points(run, metrics, "eval_history", metric))]
    else:
        raise PeftkitError(f"--metric '{metric}': expected loss or an evaluation score such as eval_loss, "
                           "eval_accuracy, eval_f1")
    return [c for c in found if c[1]]


def figure(runs: Sequence[tuple[str, dict[str, Any]]], metric: str = "loss") -> Any:
    """A matplotlib Figure of ``metric``'s curves for each (name, metrics) of ``runs``: one colour per run,
    training solid, evaluation dashed with markers. Refused (PeftkitError) when a run has no point of it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="tight")
    ax = fig.add_subplot()
    for i, (name, metrics) in enumerate(runs):
        found = curves(name, metrics, metric)
        if not found:
            evaluated = "" if metric == "loss" else (" (the run did not evaluate while it trained, see "
                                                     "train.eval_strategy, or was saved before peftkit kept them)")
            raise PeftkitError(f"run '{name}': {METRICS_FILE} has no {metric} curve{evaluated}")
        for label, steps, values in found:
            train = label == "train loss"
            ax.plot(steps, values, color=f"C{i % 10}", linestyle="-" if train else "--",
                    marker=None if train and len(steps) > 1 else "o", markersize=4,
                    label=f"{name}: {label}" if len(runs) > 1 else label)
    ax.set_xlabel("step")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{metric.replace('_', ' ')} of {runs[0][0]}" if len(runs) == 1 else metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def save(fig: Any, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` (.png or .svg) in one rename; nothing half-written."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise PeftkitError(f"--out '{out}': expected a file name ending in {' or '.join(FORMATS)}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=out.suffix.lower()[1:], dpi=120)
    atomic.write_bytes(out, buffer.getvalue())
    return out


def write_run_plot(staging: Path, metrics: dict[str, Any], output_dir: Path) -> None:
    """The run's loss curves as ``curves.png`` in its staging folder, where it has a curve and the file would not
    replace one of the user's in ``output_dir``. Never fails: a plot is not worth a lost run (a note instead)."""
    try:
        target = output_dir / CURVES_FILE
        if os.path.lexists(target):
            manifest = ownership.read_manifest(output_dir)
            if CURVES_FILE not in (manifest or {}).get("entries", []):
                return
        if not curves(output_dir.name, metrics):
            return
        save(figure([(output_dir.name, metrics)]), staging / CURVES_FILE)
    except ImportError:  # matplotlib is an extra: pip install 'peftkit[bench]'
        return
    except Exception as exc:  # whatever went wrong, the run is saved without its picture
        (staging / CURVES_FILE).unlink(missing_ok=True)
        print(f"peftkit: note: {CURVES_FILE} was not drawn ({first_line(exc)})", file=sys.stderr)
