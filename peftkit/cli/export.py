"""Verbs that turn runs into something else: `export`, `fuse`."""

from __future__ import annotations

import argparse
from typing import Any

from peftkit.cli.common import (
    Verbs,
    byte_size,
    finite_float,
    non_negative_float,
    positive_int,
    print_metrics,
    share,
    verb,
)
from peftkit.errors import PeftkitError


def add_export(verbs: Verbs) -> None:
    """Declare `peftkit export RUN --out DIR [--merge | --adapter-only] [--format …] …`."""
    export = verb(verbs, "export", cmd_export, "export a run: merged weights plain transformers loads, or its adapter")
    export.add_argument("run", help="run directory")
    export.add_argument("--out", required=True, help="directory to create (written whole or not at all)")
    what = export.add_mutually_exclusive_group()
    what.add_argument("--merge", action="store_true", help="merge the adapter into the base (the default)")
    what.add_argument("--adapter-only", action="store_true", help="a clean peft adapter + head, no base weights")
    export.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "f32", "f16", "bf16", "q8_0"],
                        help="dtype of the merged weights (default: the run's model.dtype; --format gguf: f32, f16 "
                             "(default), bf16 or q8_0); a 4-/8-bit base is de-quantized into it")
    export.add_argument("--requantize", choices=["4bit", "8bit"],
                        help="re-quantize the merged weights with bitsandbytes (smaller; costs accuracy, "
                             "measured in the parity report; loading needs bitsandbytes)")
    export.add_argument("--format", choices=["safetensors", "onnx", "gguf"], default="safetensors",
                        help="safetensors for transformers / peft, or onnx: the merged model with dynamic batch and "
                             "sequence axes, parity-checked in onnxruntime (classification, sentiment, ner heads; "
                             "needs peftkit[onnx]), or gguf: one file for llama.cpp / Ollama / LM Studio, "
                             "parity-checked in transformers' GGUF reader (causal_lm runs: Llama, SmolLM2, Qwen2)")
    export.add_argument("--opset", type=positive_int,
                        help="ONNX opset version (--format onnx; default: the exporter's)")
    export.add_argument("--tolerance", type=non_negative_float, default=1e-4,
                        help="largest |logit difference| allowed for an fp32 merge of an fp32 run (--format gguf: "
                             "for f32; f16 ×100, bf16 and q8_0 ×1000)")
    export.add_argument("--samples", type=positive_int, default=64, help="test examples in the parity check")
    export.add_argument("--max-shard-size", type=byte_size, default="2GB",
                        help="largest safetensors shard, e.g. 500MB")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")


def _onnx_export(args: argparse.Namespace) -> dict[str, Any]:
    from peftkit.export.onnx import export_onnx

    given = [flag for flag, value in (("--adapter-only", args.adapter_only), ("--dtype", args.dtype),
                                      ("--requantize", args.requantize)) if value]
    if given:
        raise PeftkitError(f"--format onnx exports the merged model in float32; {given[0]} does not apply")
    return export_onnx(args.run, args.out, tolerance=args.tolerance, samples=args.samples, opset=args.opset,
                       overwrite=args.overwrite)


def _gguf_export(args: argparse.Namespace) -> dict[str, Any]:
    from peftkit.export.gguf import export_gguf

    given = [flag for flag, value in (("--adapter-only", args.adapter_only), ("--requantize", args.requantize),
                                      ("--opset", args.opset is not None)) if value]
    if given:
        raise PeftkitError(f"--format gguf exports the merged model; {given[0]} does not apply")
    return export_gguf(args.run, args.out, dtype=args.dtype or "f16", tolerance=args.tolerance, samples=args.samples,
                       overwrite=args.overwrite)


def cmd_export(args: argparse.Namespace) -> None:
    """Export a run (merged, adapter only, or ONNX) and print its parity check."""
    from peftkit.export import export_run

    if args.format == "onnx":
        report = _onnx_export(args)
    elif args.format == "gguf":
        report = _gguf_export(args)
    elif args.opset is not None:
        raise PeftkitError("--opset applies to --format onnx only")
    else:
        report = export_run(
            args.run, args.out, mode="adapter" if args.adapter_only else "merge", dtype=args.dtype,
            requantize_to=args.requantize, tolerance=args.tolerance, samples=args.samples,
            max_shard_size=args.max_shard_size, overwrite=args.overwrite,
        )
    parity = report["parity"]
    verdict = (f"within tolerance {parity['tolerance']:g} × max(1, largest |logit| {parity['max_abs_logit']:.3g})"
               if parity["checked"] else "report only")
    print(
        f"parity on {parity['compared']} test items: max |Δlogit| {parity['max_abs_logit_diff']:.2e}, "
        f"mean {parity['mean_abs_logit_diff']:.2e}, prediction agreement {parity['prediction_agreement']:.4f} "
        f"({verdict})"
    )
    if report.get("requantized"):
        q = report["requantized"]
        print(f"re-quantized to {q['mode']}: weights {q['bytes_before']:,} → {q['bytes_after']:,} bytes; "
              "loading it needs bitsandbytes")
    kind = {"onnx": "ONNX model (merged, float32)", "gguf": f"GGUF model (merged, {report.get('dtype')})"}.get(
        args.format, "merged model" if report["mode"] == "merge" else "adapter and task head")
    print(f"exported {kind} to {args.out} ({report['weights_bytes']:,} bytes of weights)")


def add_fuse(verbs: Verbs) -> None:
    """Declare `peftkit fuse RUN ... --out DIR [--weights W ...] [--combination …] …`."""
    fuse = verb(verbs, "fuse", cmd_fuse,
                "fuse the LoRA adapters of runs on one base into a new run (add_weighted_adapter)")
    fuse.add_argument("runs", nargs="+", help="run directories (same base model, head and labels)")
    fuse.add_argument("--out", required=True, help="run directory to create")
    fuse.add_argument("--weights", type=finite_float, nargs="+",
                      help="one weight per run (default: equal, summing to 1)")
    fuse.add_argument("--combination", default="linear",
                      choices=["linear", "cat", "svd", "ties", "dare_linear", "dare_ties"],
                      help="how peft combines the adapters")
    fuse.add_argument("--density", type=share, default=0.5, help="share of weights kept by ties / dare pruning")
    fuse.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")


def cmd_fuse(args: argparse.Namespace) -> None:
    """Fuse the LoRA adapters of runs into a new run and print its test metrics."""
    from peftkit.export import fuse_runs

    result = fuse_runs(args.runs, args.out, weights=args.weights, combination=args.combination,
                       density=args.density, overwrite=args.overwrite)
    print_metrics(f"test metrics of the fused run ({args.combination}):", result.metrics["test"])
    print(f"fused run saved to {result.output_dir}; evaluate it again with `peftkit eval {result.output_dir}`")
