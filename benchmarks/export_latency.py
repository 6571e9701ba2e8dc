"""Inference latency of a run's base model, its adapter model (unmerged), its merged export and (with onnxruntime
installed, a classification or NER run) its ONNX export in onnxruntime, same inputs.

    python benchmarks/export_latency.py RUN_DIR [--samples 256] [--batch-size 32] [--repeats 7] [--json FILE]

The models see the same padded batches of the run's test split; passes are interleaved
(base, adapter, merged, onnx, base, ...) so machine load hits all alike, and the median pass counts.
onnxruntime gets as many intra-op threads as torch has. Prints a Markdown table (milliseconds per batch and
ratio to the base).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peft
import torch
import transformers

from peftkit.errors import PeftkitError
from peftkit.export import export_run
from peftkit.export.merge import run_builder
from peftkit.export.parity import Batches, sample_batches
from peftkit.rundir.load import load_run


class OnnxModel:
    """An onnxruntime session called like a model: ``model(**batch)`` on the same torch batches."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, **batch: torch.Tensor) -> Any:
        return self.session.run(["logits"], {k: v.numpy() for k, v in batch.items() if k in self.inputs})


def onnx_model(run_dir: Path, tmp: Path) -> OnnxModel | None:
    """The run exported to ONNX, or None without onnxruntime or for a head ONNX export does not cover."""
    try:
        from peftkit.export.onnx import export_onnx

        export_onnx(run_dir, tmp / "onnx", samples=16)
    except PeftkitError as exc:
        print(f"no ONNX row: {exc}")
        return None
    return OnnxModel(tmp / "onnx" / "model.onnx")


@torch.no_grad()
def one_pass(model: Any, batches: Batches) -> float:
    """Seconds for one forward pass over every batch."""
    started = time.perf_counter()
    for batch in batches:
        model(**batch)
    return time.perf_counter() - started


def measure(run_dir: Path, samples: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """Median milliseconds per batch of base, adapter, merged and ONNX models, and their ratios to the base."""
    run = load_run(run_dir)
    batches = sample_batches(run.recipe, run.head, run.tokenizer, samples, batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        export_run(run_dir, Path(tmp) / "merged", samples=16)
        merged = run.head.auto_class.from_pretrained(Path(tmp) / "merged")
        onnx = onnx_model(run_dir, Path(tmp))
    models = {"base": run_builder(run.recipe, run.head)(), "adapter": run.model, "merged": merged}
    if onnx is not None:
        models["onnx"] = onnx
    passes: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
        one_pass(model, batches[:1])  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            passes[name].append(one_pass(model, batches))
    ms = {name: 1000 * statistics.median(p) / len(batches) for name, p in passes.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    return {
        "run": str(run_dir),
        "model": run.recipe.model.name,
        "method": run.recipe.method.name,
        "examples": sum(len(b["input_ids"]) for b in batches),
        "batch_size": batch_size,
        "batches": len(batches),
        "repeats": repeats,
        "ms_per_batch": ms,
        "ratio_to_base": {name: ms[name] / ms["base"] for name in ms},
        "device": f"CPU ({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "onnxruntime": _version("onnxruntime"), "python": sys.version.split()[0]},
        "commit": commit,
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table."""
    rows = [f"| {name} | {result['ms_per_batch'][name]:.1f} | {result['ratio_to_base'][name]:.2f} |"
            for name in result["ms_per_batch"]]
    return "\n".join(["| model | ms / batch | × base |", "|---|---|---|", *rows])


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run directory (a LoRA-family run)")
    parser.add_argument("--samples", type=int, default=256, help="test examples in the timed passes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per model (median kept)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    result = measure(args.run, args.samples, args.batch_size, args.repeats)
    print(markdown(result))
    print(f"{result['examples']} examples in {result['batches']} batches of {result['batch_size']}, "
          f"median of {result['repeats']} passes; {result['device']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
