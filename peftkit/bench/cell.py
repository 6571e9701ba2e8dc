"""One benchmark cell in its own process: `python -m peftkit.bench.cell SPEC.json RESULT.json`.

Memory is measured in this process only, so figures never leak between cells: on a GPU
``torch.cuda.max_memory_allocated``; on a CPU the peak resident set size above the baseline taken after
imports, data preparation and the memory estimate (Linux: the kernel's high-water mark is reset there), split
into loading (model read and quantized) and training (steps, evaluation, save) at the start of training.
"""

from __future__ import annotations

import gc
import json
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peftkit import atomic

SCHEMA = "peftkit.bench.cell/1"
#: Keys every result file has, whatever its status.
RESULT_KEYS = ("schema", "suite", "cell", "variant", "values", "status", "error", "recipe_hash", "provenance")
TIMING_KEYS = {"runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time", "loss"}
STATUS_FILE = Path("/proc/self/status")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON beside ``path`` and rename it into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


def _status_bytes(field: str) -> int | None:
    if not STATUS_FILE.is_file():
        return None
    for line in STATUS_FILE.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak() -> tuple[int, bool]:
    """Start measuring from now: (current resident bytes, whether the peak could be reset)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        reset = True
    except OSError:
        reset = False
    current = _status_bytes("VmRSS")
    return (current if current is not None else _maxrss_bytes()), reset


def _resident_peak(reset: bool) -> int:
    peak = _status_bytes("VmHWM") if reset else None
    return peak if peak is not None else _maxrss_bytes()


class LoadPhaseProbe(TrainerCallback):
    """When training begins: note the resident peak of loading (model, quantization, data) and restart the
    high-water mark, so the training phase (steps, evaluation, save) is measured on its own."""

    def __init__(self, reset: bool) -> None:
        self.reset = reset
        self.load_peak: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.load_peak = _resident_peak(self.reset)
        if self.reset:
            Path("/proc/self/clear_refs").write_text("5")


def peak_memory(baseline: int, reset: bool, probe: LoadPhaseProbe) -> dict[str, Any]:
    """Peaks since ``reset_peak``, above the baseline: resident bytes of loading and of training (CPU), and on a
    GPU the allocator's peak. ``peak_bytes`` is the training-phase figure the estimate predicts."""
    import torch

    train_peak = _resident_peak(probe.reset)
    load_peak = probe.load_peak if probe.load_peak is not None else train_peak
    overall = max(load_peak, train_peak) if probe.reset else train_peak
    cuda = torch.cuda.is_available()
    return {
        "device": "cuda" if cuda else "cpu",
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else train_peak - baseline,  # whole run if no reset
        "rss_load_peak_above_baseline_bytes": load_peak - baseline,
        "rss_train_peak_above_baseline_bytes": train_peak - baseline if probe.reset else None,
        "rss_peak_above_baseline_bytes": overall - baseline,
        "rss_baseline_bytes": baseline,
        "tensor_peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_reset": reset,
    }


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one cell's recipe; everything measured goes into the returned result."""
    from peftkit.bench.provenance import collect, recipe_hash
    from peftkit.estimate import estimate
    from peftkit.modeling import random_init_checkpoint
    from peftkit.recipe import recipe_from_dict
    from peftkit.training import train

    result = base_result(spec)
    result["provenance"] = collect()
    recipe = recipe_from_dict(spec["recipe"], source=f"cell {spec['cell']}")
    recipe.output_dir = spec["output_dir"]
    result["recipe_hash"] = recipe_hash(recipe.to_yaml())
    if spec.get("baseline"):
        return run_baseline(recipe, result)
    result.update(method=recipe.method.name, quantization=recipe.quantization.mode, model=recipe.model.name)
    predicted = estimate(recipe)
    random_init_checkpoint(recipe.model)  # built once, outside the measured span
    baseline, reset = reset_peak()
    probe = LoadPhaseProbe(reset)
    run = train(recipe, overwrite=True, callbacks=[probe])
    memory = peak_memory(baseline, reset, probe)
    memory["predicted_bytes"] = predicted.total
    memory["predicted"] = predicted.as_dict()
    memory["error_percent"] = 100 * (predicted.total - memory["peak_bytes"]) / max(memory["peak_bytes"], 1)
    m = run.metrics
    train_metrics = m["train"]
    samples_per_second = train_metrics.get("samples_per_second")
    tokens = train_metrics.get("input_tokens")
    per_example = tokens / train_metrics["examples"] if tokens and train_metrics["examples"] else None
    result.update(
        status="ok",
        parameters=m["parameters"],
        adapter_bytes=m.get("adapter_bytes"),
        memory=memory,
        speed={
            "train_seconds": train_metrics["seconds"],
            "steps": train_metrics["steps"],
            "samples_per_second": samples_per_second,
            "tokens_per_second": samples_per_second * per_example if samples_per_second and per_example else None,
            "eval_samples_per_second": m["test"].get("samples_per_second"),
        },
        metrics={k: v for k, v in m["test"].items() if isinstance(v, (int, float)) and k not in TIMING_KEYS},
        train_loss=train_metrics["loss"],
    )
    if not spec.get("keep_run"):
        shutil.rmtree(run.output_dir, ignore_errors=True)
    return result


def run_baseline(recipe: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The TF-IDF + logistic regression row on the recipe's split, its resident peak measured like a cell's."""
    from peftkit.bench.tfidf import METHOD, run_tfidf

    baseline, reset = reset_peak()
    fitted = run_tfidf(recipe)
    peak = _resident_peak(reset) - baseline
    result.update(
        status="ok",
        method=METHOD,
        quantization="none",
        model="–",
        parameters=fitted["parameters"],
        adapter_bytes=None,
        memory={"device": "cpu", "peak_bytes": peak, "rss_peak_above_baseline_bytes": peak, "rss_baseline_bytes":
                baseline, "peak_reset": reset, "predicted_bytes": None},
        speed={"train_seconds": fitted["train_seconds"], "steps": None,
               "samples_per_second": fitted["train_examples"] / max(fitted["train_seconds"], 1e-9),
               "tokens_per_second": None, "eval_samples_per_second": None},
        metrics=fitted["metrics"],
        features=fitted["features"],
        train_loss=None,
    )
    return result


def base_result(spec: dict[str, Any]) -> dict[str, Any]:
    """The keys every result has, before anything ran."""
    return {
        "schema": SCHEMA,
        "suite": spec["suite"],
        "cell": spec["cell"],
        "variant": spec["variant"],
        "values": spec["values"],
        "labels": spec.get("labels", {}),
        "status": "failed",
        "error": None,
        "recipe_hash": None,
        "provenance": None,
    }


def failed_result(spec: dict[str, Any], error: str, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """A result recording why the cell failed (one line)."""
    result = {**base_result(spec), **(partial or {})}
    result.update(status="failed", error=error)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the cell described by SPEC.json and write RESULT.json (also when it fails)."""
    spec_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    started = time.perf_counter()
    try:
        result = run_cell(spec)
    except Exception as exc:  # recorded, never raised: the suite goes on with the next cell
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = failed_result(spec, f"{type(exc).__name__}: {first}".rstrip(": "))
    result["wall_seconds"] = time.perf_counter() - started
    write_json_atomic(Path(result_path), result)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
