"""One benchmark cell in its own process: `python -m peftkit.bench.cell SPEC.json RESULT.json`.

Memory is measured in this process only, so figures never leak between cells, above a baseline taken after
imports, the memory estimate and building a random-init checkpoint, by phase (load / train / evaluate / save;
see :mod:`peftkit.bench.memory`): on a CPU private memory and the resident set apart, on a GPU the allocator's
allocated and reserved peaks.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from peftkit.bench.memory import MemorySampler, PhaseCallback
from peftkit.errors import first_line
from peftkit.rundir import atomic
from peftkit.rundir.metrics import TIMING_KEYS

SCHEMA = "peftkit.bench.cell/1"
#: Keys every result file has, whatever its status.
RESULT_KEYS = ("schema", "suite", "cell", "variant", "values", "status", "error", "recipe_hash", "provenance")
#: Test figures that are not a cell's metrics: the Trainer's timings and the loss.
NOT_METRICS = TIMING_KEYS | {"loss"}
#: How reports label a cell that failed because the GPU ran out of memory (``result["out_of_memory"]``).
OUT_OF_MEMORY = "out of memory"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON beside ``path`` and rename it into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


def measured_memory(sampler: MemorySampler, cpu_only: bool = False) -> dict[str, Any]:
    """The sampler's figures; ``peak_bytes`` (what reports compare and the estimate predicts) is the private
    peak on a CPU and ``max_memory_allocated`` on a GPU, over every phase, above the baseline. ``cpu_only``: the
    cell ran on the CPU although a GPU is present (the TF-IDF baseline), so its private peak is what it held."""
    summary = sampler.summary()
    cuda = summary["cuda_allocated_peak_bytes"] is not None and not cpu_only
    return {
        "device": "cuda" if cuda else "cpu",
        "measure": "cuda_allocated" if cuda else "private",
        "peak_bytes": summary["cuda_allocated_peak_bytes"] if cuda else summary["private_peak_bytes"],
        "peak_phase": summary["cuda_allocated_peak_phase"] if cuda else summary["private_peak_phase"],
        **summary,
    }


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, the GPU synchronised at both ends: their median leaves the first
    steps' warm-up out of a per-step figure."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = self._now()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(self._now() - self._started)

    def median(self) -> float | None:
        """The median step time in seconds (None before any step)."""
        return statistics.median(self.seconds) if self.seconds else None


def run_cell(spec: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one cell's recipe; everything measured goes into ``result`` (a base result), which keeps
    what was known before a failure: provenance, the prediction, the settings the run resolved."""
    from peftkit.bench.provenance import collect, recipe_hash
    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware.auto import estimate_on
    from peftkit.model.loading import random_init_path
    from peftkit.training.run import train

    result["provenance"] = collect()
    recipe = recipe_from_dict(spec["recipe"], source=f"cell {spec['cell']}")
    recipe.output_dir = spec["output_dir"]
    result["recipe_hash"] = recipe_hash(recipe.to_yaml())
    if spec.get("baseline"):
        return run_baseline(recipe, result)
    result.update(method=recipe.method.name, quantization=recipe.quantization.mode, model=recipe.model.name)
    checkpoint = random_init_path(recipe.model)
    if checkpoint is not None and not (checkpoint / "config.json").is_file():
        # built once, in a process of its own: its memory never inflates the baseline
        subprocess.run([sys.executable, "-m", "peftkit.bench.cell", "--prepare", json.dumps(spec["recipe"])],
                       check=True)
    if (spec.get("search") or {}).get("role") == "trial":
        return run_trial(spec, recipe, result)
    predicted = estimate_on(recipe)
    result["memory"] = {"predicted_bytes": predicted.total}
    sampler, timer = MemorySampler().start("load"), StepTimer()
    try:
        run = train(recipe, overwrite=True, callbacks=[PhaseCallback(sampler), timer])
    finally:
        sampler.stop()
        result["settings"] = settings(recipe)  # resolved in place before anything loaded
        result["memory"] = memory = {**measured_memory(sampler), "predicted_bytes": predicted.total}
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
            "median_step_seconds": timer.median(),
            "samples_per_second": samples_per_second,
            "tokens_per_second": samples_per_second * per_example if samples_per_second and per_example else None,
            "eval_samples_per_second": m["test"].get("samples_per_second"),
        },
        metrics={k: v for k, v in m["test"].items() if isinstance(v, (int, float)) and k not in NOT_METRICS},
        train_loss=train_metrics["loss"],
    )
    if not spec.get("keep_run"):
        shutil.rmtree(run.output_dir, ignore_errors=True)
    return result


def run_trial(spec: dict[str, Any], recipe: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A search trial: train as a cell does, then score the validation split only (the test split is never
    evaluated, so it cannot sway the choice). Records the validation metrics and the metric that chooses; saves no
    run (its training folder is removed, also with --keep-runs)."""
    from peftkit.bench.search import has_validation_split
    from peftkit.data.loading import load_source
    from peftkit.errors import PeftkitError
    from peftkit.registry import HEADS
    from peftkit.training.build import build_trainer

    if has_validation_split(spec["recipe"], spec["cell"]) is None and "validation" not in load_source(recipe.data):
        raise PeftkitError(f"search trial {spec['cell']}: data.source '{recipe.data.source}' has no validation split "
                           "and data.validation_size is 0; the trial would be scored on the test split")
    metric = spec["search"]["metric"] or recipe.train.metric_for_best_model or HEADS.get(recipe.task.head).main_metric
    output_dir = Path(spec["output_dir"])
    prepared = build_trainer(recipe, output_dir)
    started = time.perf_counter()
    try:
        prepared.trainer.train()
        seconds = time.perf_counter() - started
        scores = prepared.trainer.evaluate()  # the Trainer's eval_dataset: the validation split
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    validation = {k.removeprefix("eval_"): v for k, v in scores.items()
                  if isinstance(v, (int, float)) and k.removeprefix("eval_") not in TIMING_KEYS}
    if metric not in validation:
        raise PeftkitError(f"search trial {spec['cell']}: validation metric '{metric}' not reported; it has "
                           f"{', '.join(validation)}")
    result.update(status="ok", search={**spec["search"], "metric": metric}, validation=validation,
                  settings=settings(recipe),
                  speed={"train_seconds": seconds, "steps": prepared.trainer.state.global_step})
    return result


def settings(recipe: Any) -> dict[str, Any]:
    """The device-dependent settings a run trained with, its `auto` options resolved."""
    return {"train.precision": recipe.train.precision, "train.optim": recipe.train.optim,
            "quantization.compute_dtype": recipe.quantization.compute_dtype if recipe.quantization.mode != "none"
            else None,
            "model.attn_implementation": recipe.model.attn_implementation,
            "train.gradient_checkpointing": recipe.train.gradient_checkpointing}


def run_baseline(recipe: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The TF-IDF + logistic regression row on the recipe's split, its memory measured like a cell's (the fit is
    one phase: train)."""
    from peftkit.bench.tfidf import METHOD, run_tfidf

    sampler = MemorySampler().start("train")
    try:
        fitted = run_tfidf(recipe)
    finally:
        sampler.stop()
    result.update(
        status="ok",
        method=METHOD,
        quantization="none",
        model="–",
        parameters=fitted["parameters"],
        adapter_bytes=None,
        memory={**measured_memory(sampler, cpu_only=True), "predicted_bytes": None},
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
        "search": spec.get("search"),
        "cells_at_a_time": spec.get("jobs", 1),
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


def failure(spec: dict[str, Any], exc: BaseException, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """The failed result of an exception: its type and first line, whether the GPU ran out of memory, and what
    ``partial`` already held."""
    from peftkit.training.guards import is_out_of_memory

    first = first_line(exc) if str(exc).strip() else ""
    return failed_result(spec, f"{type(exc).__name__}: {first}".rstrip(": "),
                         {**(partial or {}), "out_of_memory": is_out_of_memory(exc)})


def status_label(result: dict[str, Any]) -> str:
    """A result's status as reports show it: ok, out of memory, or failed with the first 60 characters of why."""
    if result.get("status") == "ok":
        return "ok"
    if result.get("out_of_memory"):
        return OUT_OF_MEMORY
    return f"failed: {str(result.get('error') or '')[:60]}"


def main(argv: list[str] | None = None) -> int:
    """Run the cell described by SPEC.json and write RESULT.json (also when it fails); with ``--prepare RECIPE``
    (JSON) only build the recipe's random-init checkpoint."""
    argv = argv if argv is not None else sys.argv[1:]
    if argv[:1] == ["--prepare"]:
        from peftkit.config.load import recipe_from_dict
        from peftkit.model.loading import random_init_checkpoint

        random_init_checkpoint(recipe_from_dict(json.loads(argv[1]), source="cell").model)
        return 0
    spec_path, result_path = argv[:2]
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    started = time.perf_counter()
    result = base_result(spec)
    try:
        result = run_cell(spec, result)
    except Exception as exc:  # recorded, never raised: the suite goes on with the next cell
        traceback.print_exc()
        result = failure(spec, exc, result)
    result["wall_seconds"] = time.perf_counter() - started
    write_json_atomic(Path(result_path), result)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
