"""Run a suite: expand the grid, run each missing cell in its own process, record failures, show progress."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from peftkit.bench.cell import failed_result, write_json_atomic
from peftkit.bench.search import choose, has_validation_split, is_trial
from peftkit.bench.suite import Cell, Suite, expand, load_suite, short_value, trial_cells
from peftkit.config.load import recipe_from_dict
from peftkit.errors import PeftkitError
from peftkit.rundir.layout import BENCH_RESULTS_DIR, BENCH_SUITE_FILE

RESULTS_DIR = BENCH_RESULTS_DIR  # the names live in peftkit.rundir.layout: `peftkit runs` tells such a folder by them
SUITE_FILE = BENCH_SUITE_FILE


@dataclass
class BenchOutcome:
    """What a suite run did: where, which cells ran now, which were already there."""

    directory: Path
    ran: list[str]
    skipped: list[str]
    failed: list[str]


def default_directory(suite: Suite, quick: bool) -> Path:
    """runs/bench-<suite name>[-quick]."""
    return Path("runs") / f"bench-{suite.name}{'-quick' if quick else ''}"


def result_path(directory: Path, cell: Cell) -> Path:
    """Where one cell's result JSON lives."""
    return directory / RESULTS_DIR / f"{cell.id}.json"


def load_results(directory: Path) -> list[dict[str, Any]]:
    """Every cell result saved under a bench directory, in file-name order."""
    results_dir = Path(directory) / RESULTS_DIR
    if not results_dir.is_dir():
        raise PeftkitError(f"'{directory}' holds no benchmark results (no {RESULTS_DIR}/ directory)")
    return [read_result(path) for path in sorted(results_dir.glob("*.json"))]


def read_result(path: Path) -> dict[str, Any]:
    """One cell's result JSON; a broken file is a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PeftkitError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class CellProcesses:
    """The cell processes running now, so that an interrupt stops every one of them (``--jobs`` runs several)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen] = set()
        self._stopping = False

    def run(self, command: list[str], log: Any, timeout: float | None, env: dict[str, str]) -> int | str:
        """Run ``command`` to its end (its output into ``log``); its exit code, or "timeout" (it is killed)."""
        with self._lock:
            if self._stopping:
                return "interrupted"
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            self._live.add(process)
        try:
            code = process.wait(timeout=timeout)
            return "interrupted" if self._stopping else code
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return "timeout"
        except BaseException:  # an interrupt while waiting: the cell stops with the suite
            process.kill()
            process.wait()
            raise
        finally:
            with self._lock:
                self._live.discard(process)

    def stop(self) -> None:
        """Kill every running cell process and start no more."""
        with self._lock:
            self._stopping = True
            for process in self._live:
                process.kill()
            live = list(self._live)
        for process in live:
            process.wait()


def run_one(suite: Suite, cell: Cell, directory: Path, timeout: float | None, keep_runs: bool,
            processes: CellProcesses | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run one cell in a fresh Python process; a crash, timeout or bad recipe becomes a failed result, and so
    does a cell whose variant's search has no finished trial to choose from. ``jobs``: how many cells run at a
    time (recorded: their times share the machine)."""
    spec = {"suite": suite.name, "cell": cell.id, "variant": cell.variant, "values": cell.values,
            "labels": cell.labels, "recipe": cell.recipe, "output_dir": str(directory / "runs" / cell.id),
            "keep_run": keep_runs, "baseline": cell.baseline, "search": cell.search, "jobs": jobs}
    out = result_path(directory, cell)
    if cell.search and cell.search["role"] == "chosen" and cell.search["value"] is None:
        trials = ", ".join(t["cell"] for t in cell.search["tried"])
        result = failed_result(spec, f"search: no trial finished, so no {cell.search['key']} was chosen (see {trials})")
        write_json_atomic(out, result)
        return result
    try:
        recipe_from_dict(cell.recipe, source=f"cell {cell.id}")
    except PeftkitError as exc:  # e.g. a method that is not installed here: recorded, the suite goes on
        result = failed_result(spec, str(exc))
        write_json_atomic(out, result)
        return result
    spec_path = directory / "specs" / f"{cell.id}.json"
    write_json_atomic(spec_path, spec)
    log = directory / "logs" / f"{cell.id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w", encoding="utf-8") as handle:
        code = (processes or CellProcesses()).run(
            [sys.executable, "-m", "peftkit.bench.cell", str(spec_path), str(out)], handle, timeout, env)
    if code == "interrupted":
        raise KeyboardInterrupt
    if not out.is_file():  # killed before it could write (out of memory, timeout, signal)
        reason = f"stopped after {timeout:.0f} s (cell_timeout)" if code == "timeout" else f"exit code {code}"
        write_json_atomic(out, failed_result(spec, f"cell process ended without a result: {reason}; see {log}"))
    return json.loads(out.read_text(encoding="utf-8"))


def run_suite(path: str | Path, quick: bool = False, directory: str | Path | None = None,
              retry_failed: bool = False, keep_runs: bool = False,
              progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
              jobs: int = 1) -> BenchOutcome:
    """Run every cell of a suite that has no result yet (failed ones too with ``retry_failed``); with a `search`,
    first each variant's trials, then the grid at the value each variant's trials chose on validation. ``jobs``:
    cells run at a time, each in its own process (the search's trials finish before the seeds start)."""
    if jobs < 1:
        raise PeftkitError(f"bench: --jobs must be 1 or more, got {jobs}")
    suite = load_suite(path)
    trials = trial_cells(suite, quick)
    _check_validation_splits(path, trials)
    directory = Path(directory) if directory else default_directory(suite, quick)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SUITE_FILE).write_text(
        yaml.safe_dump({**suite.model_dump(mode="json"), "quick_run": quick}, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    outcome = BenchOutcome(directory, [], [], [])
    with _terminate_as_interrupt():
        searches = {}
        if trials:
            _run_phase(suite, trials, "search trials", directory, retry_failed, keep_runs, progress, outcome, jobs)
            searches = choose([read_result(result_path(directory, c)) for c in trials])
            for variant, search in searches.items():
                progress(f"search {variant}: {search['key']} = {short_value(search['value'])} (on validation "
                         f"{search['metric']})"
                         if search["value"] is not None else f"search {variant}: no trial finished")
        _run_phase(suite, expand(suite, quick, searches), "cells", directory, retry_failed, keep_runs, progress,
                   outcome, jobs)
    return outcome


def _check_validation_splits(path: str | Path, trials: list[Cell]) -> None:
    """A search trial must be scored on a validation split of its own, never on the test split."""
    for cell in trials:
        if has_validation_split(cell.recipe, f"cell {cell.id}") is False:
            raise PeftkitError(
                f"{path}: 'search': variant '{cell.variant}' has no validation split (data.validation_size is 0 and "
                "the data has none of its own), so its trials would be scored on the test split; set "
                "data.validation_size (e.g. 0.1) in the suite's overrides")


def _done(cell: Cell, out: Path, retry_failed: bool, progress: Callable[[str], None]) -> bool:
    """Whether a cell's saved result stands: it exists, was run with the cell's values (a search may choose
    another value on a later run) and, with ``retry_failed``, succeeded."""
    if not out.is_file():
        return False
    result = read_result(out)
    if result.get("values") != cell.values:
        progress(f"{cell.id}: its result was run with {result.get('values')}, now {cell.values}: running it again")
        return False
    return not retry_failed or result["status"] == "ok"


def _run_phase(suite: Suite, cells: list[Cell], what: str, directory: Path, retry_failed: bool, keep_runs: bool,
               progress: Callable[[str], None], outcome: BenchOutcome, jobs: int) -> None:
    todo, skipped = [], []
    for cell in cells:
        (skipped if _done(cell, result_path(directory, cell), retry_failed, progress) else todo).append(cell)
    if skipped:
        progress(f"{len(skipped)} of {len(cells)} {what} already have results in {directory}; running the other "
                 f"{len(todo)}")
    outcome.skipped += [c.id for c in skipped]
    _run_cells(suite, todo, directory, keep_runs, progress, outcome, "trial" if what == "search trials" else "cell",
               jobs)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so `kill` stops the running cell's process too, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_cells(suite: Suite, todo: list[Cell], directory: Path, keep_runs: bool, progress: Callable[[str], None],
               outcome: BenchOutcome, noun: str, jobs: int) -> None:
    """Run ``todo``, ``jobs`` cells at a time, and report each as it ends (with ``jobs`` > 1, naming the cell)."""
    durations: list[float] = []
    processes = CellProcesses()

    def start(k: int, cell: Cell) -> float:
        waves = math.ceil((len(todo) - k + 1) / jobs)
        eta = f", ETA {_duration(sum(durations) / len(durations) * waves)}" if durations else ""
        progress(f"{noun} {k}/{len(todo)}: {cell.id}{eta}")
        return time.perf_counter()

    def finished(cell: Cell, started: float, result: dict[str, Any]) -> None:
        durations.append(time.perf_counter() - started)
        outcome.ran.append(cell.id)
        _report(cell.id if jobs > 1 else "", durations[-1], result, outcome, progress)

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each worker waits on its cell's process
        running: dict[Future, tuple[Cell, float]] = {}
        queue = list(enumerate(todo, start=1))
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    k, cell = queue.pop(0)
                    future = pool.submit(run_one, suite, cell, directory, suite.cell_timeout, keep_runs, processes,
                                         jobs)
                    running[future] = (cell, start(k, cell))
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    cell, started = running.pop(future)
                    finished(cell, started, future.result())
        except BaseException:
            processes.stop()
            raise


def _report(name: str, seconds: float, result: dict[str, Any], outcome: BenchOutcome,
            progress: Callable[[str], None]) -> None:
    """One progress line for a cell that ended (``name`` prefixes it when cells run side by side)."""
    lead = f"  {name}: " if name else "  "
    if result["status"] == "ok" and is_trial(result):
        metric = result["search"]["metric"]
        progress(f"{lead}ok in {_duration(seconds)}: validation {metric} {result['validation'][metric]:.4f}")
    elif result["status"] == "ok":
        metric = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items() if k in ("accuracy", "f1"))
        memory = result["memory"]
        progress(f"{lead}ok in {_duration(seconds)}: peak {memory['peak_bytes'] / 2**20:.0f} MiB "
                 f"({memory.get('measure', 'peak')}, in {memory.get('peak_phase')})"
                 f"{', ' + metric if metric else ''}")
    else:
        outcome.failed.append(result["cell"])
        progress(f"{lead}failed: {result['error']}")
