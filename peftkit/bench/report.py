"""Tables and plots from a bench directory's result JSONs: Markdown (best per column in bold), CSV, PNG."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftkit.bench.cell import status_label
from peftkit.bench.runner import SUITE_FILE, load_results
from peftkit.bench.search import choose, is_trial
from peftkit.bench.suite import Suite, short_value
from peftkit.config.files import read_yaml
from peftkit.errors import PeftkitError

MIB = 2**20
SEED_KEY = "train.seed"
REPORT_FILE = "report.md"
CSV_FILE = "results.csv"
CSV_COLUMNS = ("cell", "variant", "status", "method", "quantization", "trainable_params", "total_params",
               "adapter_bytes", "measure", "peak_bytes", "peak_phase", "rss_peak_bytes", "predicted_bytes",
               "floor_bytes", "error_percent", "train_seconds", "samples_per_second", "tokens_per_second", "metric",
               "search_key", "search_value", "validation_metric", "validation", "chosen", "error")


@dataclass
class Row:
    """One variant at one grid point, its seeds aggregated."""

    variant: str
    point: str
    cells: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, get: Callable[[dict[str, Any]], Any]) -> float | None:
        values = [v for v in map(get, self.cells) if v is not None]
        return statistics.fmean(values) if values else None

    def std(self, get: Callable[[dict[str, Any]], Any]) -> float | None:
        values = [v for v in map(get, self.cells) if v is not None]
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def first(self) -> dict[str, Any]:
        return self.cells[0]


def _get(*keys: str) -> Callable[[dict[str, Any]], Any]:
    def get(result: dict[str, Any]) -> Any:
        node: Any = result
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    return get


def read_suite(directory: Path) -> Suite:
    """The suite a bench directory was run from (saved beside the results)."""
    path = directory / SUITE_FILE
    if not path.is_file():
        raise PeftkitError(f"'{directory}' has no {SUITE_FILE}; is it a `peftkit bench` output directory?")
    raw = read_yaml(path)
    raw.pop("quick_run", None)
    return Suite.model_validate(raw)


def main_metric(suite: Suite, results: list[dict[str, Any]]) -> str | None:
    """The suite's metric, else accuracy or f1, whichever the results hold; None for memory-only suites."""
    if suite.kind == "scaling":
        return None
    if suite.metric:
        return suite.metric
    found = {key for r in results for key in (r.get("metrics") or {})}
    return next((m for m in ("accuracy", "f1") if m in found), None)


def group(results: list[dict[str, Any]]) -> list[Row]:
    """Successful cells grouped by variant and grid point (all axes but the seed)."""
    rows: dict[tuple[str, str], Row] = {}
    for result in results:
        if result["status"] != "ok" or is_trial(result):
            continue
        point = "-".join(label for key, label in result.get("labels", {}).items() if key != SEED_KEY)
        rows.setdefault((result["variant"], point), Row(result["variant"], point)).cells.append(result)
    return list(rows.values())


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / MIB:,.0f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _params(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}" if value < 100 * size else f"{value / size:.0f}{unit}"
    return f"{value:.0f}"


def _bold_best(table: list[list[str]], values: list[list[float | None]], better: list[int]) -> None:
    """Bold the best cell of each column: ``better`` is +1 (higher wins), -1 (lower wins) or 0 (not ranked)."""
    for column, direction in enumerate(better):
        if not direction:
            continue
        candidates = [(v[column], i) for i, v in enumerate(values) if v[column] is not None]
        if len({c[0] for c in candidates}) < 2:
            continue
        best = max(c[0] * direction for c in candidates)
        for value, i in candidates:
            if math.isclose(value * direction, best, rel_tol=1e-9):
                table[i][column] = f"**{table[i][column]}**"


def _markdown(header: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


PEAK = _get("memory", "peak_bytes")
PEAK_PHASE = _get("memory", "peak_phase")
RSS_PEAK = _get("memory", "rss_peak_bytes")
MEASURE = _get("memory", "measure")
MEASURES = {"private": "private memory (CPU: RssAnon)", "cuda_allocated": "allocated (GPU: max_memory_allocated)"}
PREDICTED = _get("memory", "predicted_bytes")
FLOOR = _get("memory", "predicted", "floor")
ERROR = _get("memory", "error_percent")
TRAINABLE = _get("parameters", "trainable")
TOTAL = _get("parameters", "total")
SAMPLES = _get("speed", "samples_per_second")
TOKENS = _get("speed", "tokens_per_second")
SECONDS = _get("speed", "train_seconds")
ADAPTER = _get("adapter_bytes")


def measure_name(results: list[dict[str, Any]]) -> str:
    """What the peak columns count: private memory on a CPU, allocated memory on a GPU (one or both)."""
    found = sorted({MEASURE(r) for r in results if r["status"] == "ok" and MEASURE(r)})
    return " / ".join(MEASURES.get(m, m) for m in found) or "peak memory"


def _phase(row: Row) -> str:
    phases = sorted({PEAK_PHASE(c) for c in row.cells if PEAK_PHASE(c)})
    return "/".join(phases) or "–"


def accuracy_table(rows: list[Row], metric: str, reference: str | None) -> str:
    """Variants sorted by the metric (mean ± std over seeds), best per column in bold."""
    score = _get("metrics", metric)
    rows = sorted(rows, key=lambda r: -(r.mean(score) or -math.inf))
    header = ["variant", "method", "quant.", "trainable", "adapter MiB", "peak MiB", "predicted MiB", "error %",
              "train s", "samples/s", "tokens/s", f"{metric} (mean ± std)", "seeds"]
    table, values = [], []
    for row in rows:
        mean, std = row.mean(score), row.std(score)
        shown = "–" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
        name = f"{row.variant} (reference)" if row.variant == reference else row.variant
        numbers = [None, None, None, row.mean(TRAINABLE), row.mean(ADAPTER), row.mean(PEAK), row.mean(PREDICTED),
                   None, row.mean(SECONDS), row.mean(SAMPLES), row.mean(TOKENS), mean, None]
        table.append([name, row.first.get("method", "?"), row.first.get("quantization", "?"), _params(numbers[3]),
                      _num((numbers[4] or 0) / MIB, 2) if numbers[4] is not None else "–", _mib(numbers[5]),
                      _mib(numbers[6]), _num(row.mean(ERROR), 0), _num(numbers[8]), _num(numbers[9]),
                      _num(numbers[10], 0), shown, str(len(row.cells))])
        values.append(numbers)
    _bold_best(table, values, [0, 0, 0, -1, -1, -1, 0, 0, -1, 1, 1, 1, 0])
    return _markdown(header, table)


def scaling_table(rows: list[Row]) -> str:
    """Per model size: each variant's peak memory beside the analytic floor, best per size in bold."""
    header = ["size", "variant", "total params", "trainable", "peak MiB", "peak in", "RSS peak MiB", "floor MiB",
              "predicted MiB", "error %", "peak / full", "samples/s", "tokens/s"]
    text = []
    sizes: dict[str, list[Row]] = {}
    for row in rows:
        sizes.setdefault(row.point, []).append(row)
    table_all: list[list[str]] = []
    for point, members in sorted(sizes.items(), key=lambda item: item[1][0].mean(TOTAL) or 0):
        full = next((r.mean(PEAK) for r in members if r.first.get("method") == "full"), None)
        table, values = [], []
        for row in sorted(members, key=lambda r: -(r.mean(PEAK) or 0)):
            peak = row.mean(PEAK)
            ratio = peak / full if full and peak else None
            values.append([None, None, None, row.mean(TRAINABLE), peak, None, None, None, None, None, None,
                           row.mean(SAMPLES), row.mean(TOKENS)])
            table.append([point, row.variant, _params(row.mean(TOTAL)), _params(row.mean(TRAINABLE)), _mib(peak),
                          _phase(row), _mib(row.mean(RSS_PEAK)), _mib(row.mean(FLOOR)), _mib(row.mean(PREDICTED)),
                          _num(row.mean(ERROR), 0), _num(ratio, 2), _num(row.mean(SAMPLES), 2),
                          _num(row.mean(TOKENS), 0)])
        _bold_best(table, values, [0, 0, 0, -1, -1, 0, 0, 0, 0, 0, 0, 1, 1])
        table_all += table
    text.append(_markdown(header, table_all))
    return "\n".join(text)


def cell_table(results: list[dict[str, Any]]) -> str:
    """Predicted against measured peak memory for every cell, and every failed cell's error."""
    table = []
    for r in results:
        if r["status"] == "ok":
            table.append([r["cell"], "ok", _mib(PEAK(r)), PEAK_PHASE(r) or "–", _mib(RSS_PEAK(r)), _mib(PREDICTED(r)),
                          _num(ERROR(r), 0), ""])
        else:
            table.append([r["cell"], status_label(r).split(":")[0], "–", "–", "–", "–", "–",
                          (r.get("error") or "").replace("|", "\\|")[:160]])
    return _markdown(["cell", "status", "peak MiB", "peak in", "RSS peak MiB", "predicted MiB", "error %", "error"],
                     table)


def summary(rows: list[Row], metric: str | None, reference: str | None) -> list[str]:
    """Plain sentences: each variant against full fine-tuning (metric points, memory ratio); speed of the reference."""
    full = [r for r in rows if r.first.get("method") == "full" and r.variant != reference]
    lines: list[str] = []
    by_point = {r.point: r for r in full}
    for row in rows:
        base = by_point.get(row.point)
        if base is None or row is base or not base.mean(PEAK) or not row.mean(PEAK):
            continue
        where = f" at {row.point}" if row.point else ""
        ratio = row.mean(PEAK) / base.mean(PEAK)
        if metric and row.mean(_get("metrics", metric)) is not None and base.mean(_get("metrics", metric)) is not None:
            points = 100 * (row.mean(_get("metrics", metric)) - base.mean(_get("metrics", metric)))
            lines.append(f"- {row.variant}{where}: {points:+.1f} {metric} points vs {base.variant}, peak memory "
                         f"{ratio:.2f}× of {base.variant}'s")
        else:
            lines.append(f"- {row.variant}{where}: peak memory {ratio:.2f}× of {base.variant}'s "
                         f"(analytic floor {row.mean(FLOOR) / MIB:,.0f} vs {base.mean(FLOOR) / MIB:,.0f} MiB)")
    ref = next((r for r in rows if r.variant == reference), None)
    if ref is not None and full and ref.mean(SAMPLES) and full[0].mean(SAMPLES):
        base = full[0]
        detail = ""
        if metric:
            detail = (f", {metric} {ref.mean(_get('metrics', metric)):.4f} vs "
                      f"{base.mean(_get('metrics', metric)):.4f}")
        lines.append(f"- {reference} (reference): {ref.mean(SAMPLES):.1f} samples/s vs {base.variant}'s "
                     f"{base.mean(SAMPLES):.1f} ({base.mean(SAMPLES) / ref.mean(SAMPLES):.2f}× faster){detail}")
    return lines


def search_table(searches: dict[str, dict[str, Any]]) -> str:
    """Per variant: every value tried with its validation score (the chosen one in bold), and the choice."""
    first = next(iter(searches.values()))
    metrics = sorted({s["metric"] for s in searches.values() if s["metric"]})
    table = []
    for variant, search in searches.items():
        tried = []
        for trial in search["tried"]:
            score = trial["status"] if trial["validation"] is None else f"{trial['validation']:.4f}"
            shown = f"{short_value(trial['value'])}: {score}"
            chosen = trial["value"] == search["value"] and trial["validation"] is not None
            tried.append(f"**{shown}**" if chosen else shown)
        table.append([variant, " · ".join(tried),
                      "–" if search["value"] is None else short_value(search["value"])])
    header = ["variant", f"{first['key']} tried: validation {'/'.join(metrics) or 'metric'}", "chosen"]
    return _markdown(header, table)


def search_text(searches: dict[str, dict[str, Any]]) -> list[str]:
    """The search section of the report: how each variant's value was chosen, and the table."""
    first = next(iter(searches.values()))
    return ["## Search", "",
            f"Each variant trained once per value of `{first['key']}` (seed {first['seed']}), scored on the validation "
            "split only; the best value (ties: the first tried) trained the seeds above. No trial is evaluated on the "
            "test split, so the test split cannot sway the choice; for the same reason no trial is reused as a seed "
            "cell, even at the same seed.", "", search_table(searches), ""]


def write_csv(results: list[dict[str, Any]], path: Path, metric: str | None,
              searches: dict[str, dict[str, Any]]) -> None:
    """One line per cell, failed ones included; search trials carry their validation score and whether their
    value was chosen, seed cells the value they trained at."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in results:
            search = r.get("search") or {}
            trial = is_trial(r)
            chosen = (searches.get(r["variant"]) or {}).get("value")
            writer.writerow([r["cell"], r["variant"], r["status"], r.get("method"), r.get("quantization"),
                             TRAINABLE(r), TOTAL(r), ADAPTER(r), MEASURE(r), PEAK(r), PEAK_PHASE(r), RSS_PEAK(r),
                             PREDICTED(r), FLOOR(r), ERROR(r),
                             SECONDS(r), SAMPLES(r), TOKENS(r), _get("metrics", metric)(r) if metric else None,
                             search.get("key"), search.get("value"), search.get("metric") if trial else None,
                             _get("validation", search.get("metric") or "")(r) if trial else None,
                             (r["status"] == "ok" and search.get("value") == chosen) if trial else None,
                             r.get("error")])


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both lower memory and higher metric, by memory."""
    frontier: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier


def plot_accuracy(rows: list[Row], metric: str, directory: Path, measure: str) -> list[Path]:
    """Metric against peak memory (Pareto frontier drawn) and against trainable parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = _get("metrics", metric)
    rows = [r for r in rows if r.mean(score) is not None and r.mean(PEAK)]
    written = []
    for name, get_x, xlabel, log in (
        ("metric_vs_memory.png", PEAK, f"peak {measure} (MiB)", False),
        ("metric_vs_params.png", TRAINABLE, "trainable parameters", True),
    ):
        fig, ax = plt.subplots(figsize=(7.5, 5))
        xs = [r.mean(get_x) / (MIB if get_x is PEAK else 1) for r in rows]
        ys = [r.mean(score) for r in rows]
        errs = [r.std(score) or 0 for r in rows]
        ax.errorbar(xs, ys, yerr=errs, fmt="o", capsize=3)
        for x, y, row in zip(xs, ys, rows, strict=True):
            ax.annotate(row.variant, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
        frontier = _pareto(list(zip(xs, ys, strict=True))) if get_x is PEAK else []
        if len(frontier) > 1:  # one point is no line: no legend entry for one either
            ax.step([p[0] for p in frontier], [p[1] for p in frontier], where="post", color="tab:red",
                    linestyle="--", label="Pareto frontier")
            ax.legend()
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"test {metric} vs {xlabel.split(' (')[0]}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(directory / name, dpi=120)
        plt.close(fig)
        written.append(directory / name)
    return written


def plot_scaling(rows: list[Row], directory: Path, measure: str) -> list[Path]:
    """Peak memory against model size per variant, with each variant's analytic floor dashed."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    variants: dict[str, list[Row]] = {}
    for row in rows:
        variants.setdefault(row.variant, []).append(row)
    for i, (variant, members) in enumerate(variants.items()):
        members.sort(key=lambda r: r.mean(TOTAL) or 0)
        color = f"C{i}"
        sizes = [r.mean(TOTAL) / 1e6 for r in members]
        ax.plot(sizes, [r.mean(PEAK) / MIB for r in members], "o-", color=color, label=f"{variant} (measured)")
        ax.plot(sizes, [(r.mean(FLOOR) or 0) / MIB for r in members], "x--", color=color, alpha=0.7,
                label=f"{variant} (floor: weights + trainable state)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("model parameters (millions)")
    ax.set_ylabel(f"peak {measure} (MiB)")
    ax.set_title("peak memory vs model size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = directory / "memory_vs_size.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def predict_again(directory: Path, results: list[dict[str, Any]]) -> str | None:
    """Predict each successful cell's memory again with this checkout's estimate, from the recipe in its spec
    (``specs/<cell>.json``); measurements are left as they are. Returns the commit that predicted."""
    from peftkit.bench.provenance import git_commit
    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware import device as devices
    from peftkit.hardware.auto import estimate_on

    here = devices.current()
    for result in results:
        spec = directory / "specs" / f"{result['cell']}.json"
        if result["status"] != "ok" or is_trial(result) or not spec.is_file():
            continue  # a search trial has no memory figures
        if result["memory"]["device"] != here.kind:
            continue  # a cell measured on another kind of device keeps the prediction it recorded
        recipe = recipe_from_dict(json.loads(spec.read_text(encoding="utf-8"))["recipe"], source=str(spec))
        memory = result["memory"]
        predicted = estimate_on(recipe, here)
        memory.update(predicted=predicted.as_dict(), predicted_bytes=predicted.total,
                      error_percent=100 * (predicted.total - memory["peak_bytes"]) / max(memory["peak_bytes"], 1))
    return git_commit()


def side_by_side(results: list[dict[str, Any]]) -> str:
    """A sentence when cells ran several at a time (`bench --jobs`): their times then share the machine."""
    jobs = max((r.get("cells_at_a_time") or 1 for r in results), default=1)
    if jobs == 1:
        return ""
    return (f" Cells ran up to {jobs} at a time (`--jobs {jobs}`): times and throughput share the machine; memory "
            "is each cell's own process.")


def render(directory: str | Path, re_estimate: bool = False) -> tuple[str, list[Path]]:
    """Write report.md, results.csv and the plots into a bench directory; return the Markdown and the files.
    ``re_estimate``: predictions come from this checkout's estimate, not the ones the cells recorded."""
    directory = Path(directory)
    suite = read_suite(directory)
    results = load_results(directory)
    if not results:
        raise PeftkitError(f"'{directory}' holds no cell results yet")
    predicted_by = predict_again(directory, results) if re_estimate else None
    metric = main_metric(suite, results)
    measure = measure_name(results)
    rows = group(results)
    searches = choose(results)
    device = next((r["provenance"] for r in results if r.get("provenance")), None) or {}
    parts = [f"# {suite.name}: {suite.description}".rstrip(": "), "",
             f"Device: {device.get('device', '?')} ({device.get('gpu') or device.get('cpu', '?')}, "
             f"{device.get('torch_threads', '?')} torch threads of {device.get('cpu_count', '?')} cores); "
             f"commit {device.get('git_commit', '?')}. "
             f"{sum(r['status'] == 'ok' for r in results)} of {len(results)} cells ok."
             + (f" Predictions recomputed by `peftkit estimate` at commit {predicted_by}." if re_estimate else "")
             + side_by_side(results),
             ""]
    if rows:
        parts += [accuracy_table(rows, metric, suite.reference) if metric else scaling_table(rows), ""]
        parts += [*summary(rows, metric, suite.reference), ""]
    if searches:
        parts += search_text(searches)
    parts += [f"Peak: {measure} above the baseline after imports, over loading, training, evaluation and saving "
              "(\"peak in\": the phase it fell in); RSS peak: resident set, which also counts file pages mapped in; "
              "error = (predicted − measured) / measured.", "", cell_table(results), ""]
    text = "\n".join(parts)
    files = [directory / REPORT_FILE, directory / CSV_FILE]
    files[0].write_text(text, encoding="utf-8")
    write_csv(results, files[1], metric, searches)
    if rows:
        files += (plot_accuracy(rows, metric, directory, measure) if metric
                  else plot_scaling(rows, directory, measure))
    return text, files
