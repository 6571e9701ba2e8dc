"""`peftkit runs`: every run directory under a folder, one row each, finished or not; never fails on a bad run."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from peftkit.config.files import read_yaml
from peftkit.errors import PeftkitError, first_line
from peftkit.rundir import ownership
from peftkit.rundir.checkpoints import last_checkpoint
from peftkit.rundir.layout import (
    BENCH_RESULTS_DIR,
    BENCH_SUITE_FILE,
    CHECKPOINTS_DIR,
    METRICS_FILE,
    RECIPE_FILE,
    REPORT_FILE,
    RUN_MARKERS,
    TRAINER_STATE,
)
from peftkit.rundir.metrics import SECTIONS, main_metric
from peftkit.rundir.readback import file_problems, json_kind, recipe_problem

#: How deep `peftkit runs` looks for run directories.
MAX_DEPTH = 4
#: Metrics where lower is better; every other main metric sorts best-first from the top.
LOWER_IS_BETTER = ("loss", "token_loss", "perplexity")
SORT_KEYS = ("name", "status", "model", "method", "quantization", "head", "data", "metric", "trainable", "time",
             "date")
COLUMNS = ("name", "status", "model", "method", "quantization", "head (pooling)", "data", "metric", "trainable %",
           "train time", "date")


@dataclass
class RunRow:
    """One run directory as the table shows it; ``None`` where the run does not (yet) say."""

    name: str
    path: str
    status: str  # finished, unfinished or broken
    note: str = ""
    model: str | None = None
    method: str | None = None
    quantization: str | None = None
    head: str | None = None
    pooling: str | None = None  # a classification head's, as the run resolved it
    data: str | None = None
    metric: str | None = None
    metric_value: float | None = None
    trainable_percent: float | None = None
    train_seconds: float | None = None
    steps: int | None = None
    date: str | None = None


def _mapping(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _number(metrics: dict[str, Any], section: str, key: str | None, problems: list[str],
            odd: list[str]) -> float | None:
    """``metrics[section][key]`` as a finite float, else None: a value of another kind is named in ``problems`` (a
    damaged file), one not finite (NaN, Infinity or 1e999, which Python's json reads; a run that diverged writes NaN)
    in ``odd``."""
    part = metrics.get(section)
    value = part.get(key) if isinstance(part, dict) and key is not None else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{METRICS_FILE}: {section}.{key} is {json_kind(value)}, expected a number")
        return None
    number = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
    if not math.isfinite(number):
        odd.append(f"{METRICS_FILE}: {section}.{key} is {value!r:.20}, not a finite number")
        return None
    return number


def _short(value: Any) -> str | None:
    """A path's last part (catalogue names and hub ids stay as they are)."""
    if value is None:
        return None
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")  # no lone surrogates from YAML escapes
    return Path(text).name if text.startswith(("/", ".", "~")) else text


def _describe_recipe(row: RunRow, raw: dict[str, Any]) -> None:
    """Fill the columns a resolved recipe gives; tolerant of missing or odd sections."""

    model, method, task, data, quant = (_mapping(raw, n) for n in ("model", "method", "task", "data", "quantization"))
    row.model = _short(model.get("name"))
    row.method = _short(method.get("name"))
    row.head = _short(task.get("head"))
    pooling = task.get("pooling")
    row.pooling = pooling if isinstance(pooling, str) else None
    files = _mapping(data, "files")
    row.data = _short(files.get("train") if files else data.get("source"))
    mode = quant.get("mode", "none")
    row.quantization = f"4bit-{quant.get('quant_type', 'nf4')}" if mode == "4bit" else str(mode)


def _stamp(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return None


def _progress(directory: Path) -> tuple[str, Path | None]:
    """How far an unfinished run got, from its newest checkpoint's trainer state."""
    checkpoint = last_checkpoint(directory / CHECKPOINTS_DIR)
    if checkpoint is None:
        return "no checkpoint yet", None
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
        return f"checkpoint at step {state['global_step']} of {state['max_steps']}", checkpoint
    except (OSError, ValueError, KeyError, TypeError):
        return f"checkpoint {checkpoint.name}", checkpoint


def read_run(directory: Path, name: str) -> RunRow:
    """The row of one run directory; anything unreadable makes it ``broken`` with the reason, never an error."""
    try:
        return _read_run(directory, name)
    except OSError as exc:  # removed or made unreadable while being read
        return RunRow(name=name, path=str(directory), status="broken", note=f"unreadable ({exc.strerror or exc})")


def _read_run(directory: Path, name: str) -> RunRow:
    row = RunRow(name=name, path=str(directory), status="finished")
    recipe_path, metrics_path = directory / RECIPE_FILE, directory / METRICS_FILE
    problems = []
    if recipe_path.is_file():
        try:
            raw = read_yaml(recipe_path)
            _describe_recipe(row, raw)
            problem = recipe_problem(raw)
            if problem:
                problems.append(f"{RECIPE_FILE} {problem}")
        except (PeftkitError, RecursionError) as exc:
            problems.append(f"{RECIPE_FILE} unreadable ({first_line(exc).removeprefix(f'{recipe_path}: ')})")
    if not metrics_path.is_file():
        progress, checkpoint = _progress(directory)
        row.status = "broken" if problems else "unfinished"
        row.note = "; ".join([*problems, f"no {METRICS_FILE}: {progress}"])
        row.date = _stamp(checkpoint or (recipe_path if recipe_path.is_file() else directory))
        return row
    if not recipe_path.is_file():
        problems.append(f"no {RECIPE_FILE}")
    problems += file_problems(directory)
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError(f"holds {json_kind(metrics)}, expected an object")
    except (ValueError, RecursionError) as exc:  # not UTF-8 (UnicodeDecodeError is a ValueError), not JSON
        problems.append(f"{METRICS_FILE} unreadable ({first_line(exc)})")
        metrics = {}
    problems += [f"{METRICS_FILE}: {section} is {json_kind(metrics[section])}, expected an object"
                 for section in SECTIONS if not isinstance(metrics.get(section, {}), dict)]
    odd: list[str] = []
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    metric = main_metric(row.head, test)
    row.metric_value = _number(metrics, "test", metric, problems, odd)
    row.metric = metric if row.metric_value is not None else None
    row.trainable_percent = _number(metrics, "parameters", "trainable_percent", problems, odd)
    row.train_seconds = _number(metrics, "train", "seconds", problems, odd)
    steps = _number(metrics, "train", "steps", problems, odd)
    row.steps = None if steps is None else int(steps)
    row.date = _stamp(metrics_path)
    row.status = "broken" if problems else "finished"
    row.note = "; ".join(problems + odd)
    return row


def _is_empty(directory: Path) -> bool:
    try:
        return not any(directory.iterdir())
    except OSError:
        return False


def _is_bench(directory: Path) -> bool:
    """A `peftkit bench` output directory (its logs/ folder is no run's): not listed, looked into for kept runs."""
    return (directory / BENCH_SUITE_FILE).is_file() and (directory / BENCH_RESULTS_DIR).is_dir()


def _is_run(directory: Path) -> bool:
    """Run files, or the manifest of a run that has not written any yet; never a benchmark's output directory."""
    if _is_bench(directory):
        return False
    if any((directory / marker).exists() for marker in RUN_MARKERS):
        return True
    try:
        manifest = ownership.read_manifest(directory)
    except PeftkitError:  # not one peftkit wrote: not a run it can list
        return False
    return manifest is not None and manifest.get("kind") == "run"


def find_runs(root: str | Path) -> list[RunRow]:
    """Every run directory under ``root`` (``root`` itself when it is one), searched ``MAX_DEPTH`` levels deep.

    Empty folders directly under ``root`` are listed as unfinished (a run that has not written anything
    yet); other folders without run files are looked into, not listed, as is a benchmark's output directory (its
    runs kept with --keep-runs are listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise PeftkitError(f"runs: directory '{root}' does not exist")
    if _is_run(root):
        return [read_run(root, root.name)]
    rows: list[RunRow] = []
    bench = _is_bench(root)  # its empty folders (logs/, specs/) are no runs

    def walk(directory: Path, depth: int) -> None:
        try:
            children = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            name = str(child.relative_to(root))
            if _is_run(child):
                rows.append(read_run(child, name))
            elif depth == 0 and not bench and _is_empty(child):
                rows.append(RunRow(name=name, path=str(child), status="unfinished",
                                   note="empty directory: nothing written yet", date=_stamp(child)))
            elif depth < MAX_DEPTH and not (child / REPORT_FILE).exists():  # an export has no runs inside
                walk(child, depth + 1)

    walk(root, 0)
    return rows


def _sort_value(row: RunRow, key: str) -> Any:
    """The value a row sorts on, ``None`` when it has none; larger metric scores are better."""
    if key == "metric":
        if row.metric_value is None:
            return None
        return -row.metric_value if row.metric in LOWER_IS_BETTER else row.metric_value
    return {"trainable": row.trainable_percent, "time": row.train_seconds}.get(key, getattr(row, key, None))


def sort_rows(rows: list[RunRow], key: str = "name", reverse: bool = False) -> list[RunRow]:
    """Rows sorted by a column: text alphabetically, ``metric`` best first, ``date`` newest first, ``trainable``
    and ``time`` smallest first; ``reverse`` flips that. Runs without the value go last either way."""
    if key not in SORT_KEYS:
        raise PeftkitError(f"--sort '{key}': expected one of {', '.join(SORT_KEYS)}")
    by_name = sorted(rows, key=lambda r: r.name)
    present = [r for r in by_name if _sort_value(r, key) is not None]
    missing = [r for r in by_name if _sort_value(r, key) is None]
    descending = key in ("metric", "date")
    return sorted(present, key=lambda r: _sort_value(r, key), reverse=descending != reverse) + missing


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _cells(row: RunRow) -> list[str]:
    metric = "-" if row.metric is None or row.metric_value is None else f"{row.metric} {row.metric_value:.4f}"
    trainable = "-" if row.trainable_percent is None else f"{row.trainable_percent:.3g}"
    head = f"{row.head} ({row.pooling})" if row.head and row.pooling else row.head
    return [row.name, row.status, *(v or "-" for v in (row.model, row.method, row.quantization, head, row.data)),
            metric, trainable, _duration(row.train_seconds), row.date or "-", row.note]


def format_table(rows: list[RunRow]) -> str:
    """Aligned text columns; an unfinished or broken run says why in the last column."""
    if not rows:
        return "no runs found"
    table = [[*COLUMNS, "note"], *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]).rstrip()
        for line in table
    )


def to_json(rows: list[RunRow]) -> str:
    """The rows as a JSON list of objects (every field, values unformatted)."""
    return json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False, allow_nan=False)


def to_csv(rows: list[RunRow]) -> str:
    """The rows as CSV with a header line (every field, values unformatted)."""
    buffer = io.StringIO()
    fields = list(RunRow.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return buffer.getvalue()
