"""`peftkit export --format onnx`: merge, export with dynamic batch and sequence axes, check parity in onnxruntime."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftkit.errors import PeftkitError, first_line
from peftkit.export.merge import merged_float32, open_for_export
from peftkit.export.parity import Batches, compare, logits_of, parity_section, sample_batches, write_report_and_check
from peftkit.heads.base import Head
from peftkit.rundir.cards import write_onnx_card
from peftkit.rundir.load import load_run, load_run_tokenizer
from peftkit.rundir.staging import locked_output, staged_directory

MODEL_FILE = "model.onnx"
#: Heads whose model ends in logits per text or per token: what an ONNX Runtime deployment serves.
ONNX_AUTO_CLASSES = ("AutoModelForSequenceClassification", "AutoModelForTokenClassification")
#: Weights above this go to an external data file (an ONNX protobuf holds at most 2 GiB).
EXTERNAL_DATA_BYTES = 1_500_000_000


def _runtime() -> Any:
    """onnxruntime, or a one-line error naming the extra to install."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise PeftkitError(
            f"--format onnx needs onnx, onnxscript and onnxruntime ({exc.name} is missing); "
            "pip install 'peftkit[onnx]'"
        ) from None
    return onnxruntime


def check_exportable(head: Head) -> None:
    """Only heads that end in a transformers classification model are exported to ONNX."""
    name = getattr(head.auto_class, "__name__", str(head.auto_class))
    if name not in ONNX_AUTO_CLASSES:
        raise PeftkitError(
            f"--format onnx: task.head '{head.name}' ({name}) is not supported; ONNX export covers the "
            "sequence and token classification heads (classification, sentiment, ner)"
        )


def _example(batches: Batches) -> dict[str, torch.Tensor]:
    """Traced inputs: the first batch, doubled so neither axis is 1 (which the exporter would fix as constant)."""
    first = batches[0]
    return {name: torch.cat([tensor, tensor]) for name, tensor in first.items()}


def to_onnx(model: nn.Module, example: dict[str, torch.Tensor], path: Path, opset: int | None) -> None:
    """Export ``model``'s logits with torch.onnx's dynamo exporter; batch and sequence axes stay dynamic."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    names = list(example)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # progress lines, op notes
            warnings.simplefilter("ignore")
            exporter_log.setLevel(logging.ERROR)
            program = torch.onnx.export(
                model, (), kwargs=example, input_names=names, output_names=["logits"], opset_version=opset,
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names}, dynamo=True,
            )
    except Exception as exc:  # the exporter raises many types; the user gets one line, the cause stays chained
        first = first_line(exc)
        raise PeftkitError(f"ONNX export failed: {first}; nothing was written") from exc
    finally:
        exporter_log.setLevel(level)
    program.save(str(path), external_data=large)


def onnx_logits(session: Any, batches: Batches) -> list[torch.Tensor]:
    """float32 logits from onnxruntime, masked like ``parity.logits_of`` (real tokens only for token heads)."""
    wanted = {i.name for i in session.get_inputs()}
    out = []
    for batch in batches:
        logits = torch.from_numpy(session.run(["logits"], {k: v.numpy() for k, v in batch.items() if k in wanted})[0])
        if logits.dim() == 3 and "attention_mask" in batch:
            logits = logits[batch["attention_mask"].bool()]
        out.append(logits.float())
    return out


def export_onnx(run_dir: str | Path, out: str | Path, tolerance: float = 1e-4, samples: int = 64,
                opset: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Export a classification, sentiment or NER run to ``out/model.onnx`` and return its parity report.

    The adapter is merged into the base (fp32; a 4-/8-bit base is de-quantized first), exported with dynamic
    batch and sequence axes, and the ONNX model is run in onnxruntime on the first ``samples`` test examples
    next to the run's adapter model. For an fp32 unquantized run the export fails, leaving nothing, when the
    largest |Δlogit| exceeds ``tolerance`` (× the largest |logit| when that is above 1); otherwise the figure
    is reported. ``out`` also gets config.json (label names), the tokenizer, the report and a model card.
    """
    run_dir, out = Path(run_dir), Path(out)
    with locked_output(out):  # the whole command: a second one writing --out fails at once
        recipe, metrics, head, method = open_for_export(run_dir, out, overwrite, tolerance, samples)
        check_exportable(head)
        onnxruntime = _runtime()

        tokenizer = load_run_tokenizer(run_dir, recipe)
        batches = sample_batches(recipe, head, tokenizer, samples)
        run = load_run(run_dir)
        exact = recipe.quantization.mode == "none" and recipe.model.dtype == "float32"
        if exact:  # the graph is traced and run on the CPU: the reference runs there too, not on a GPU
            run.model.cpu()
        reference = logits_of(run.model, batches)
        with staged_directory(out, overwrite, inputs=[run_dir]) as staging:
            model = run.model if exact else None
            run = None
            gc.collect()
            model = merged_float32(model, recipe, head, method, run_dir, "onnx")
            to_onnx(model, _example(batches), staging / MODEL_FILE, opset)
            model.config.save_pretrained(staging)
            del model
            gc.collect()
            tokenizer.save_pretrained(staging)
            session = onnxruntime.InferenceSession(str(staging / MODEL_FILE), providers=["CPUExecutionProvider"])
            figures = compare(reference, onnx_logits(session, batches))
            report: dict[str, Any] = {
                "run": str(run_dir),
                "format": "onnx",
                "mode": "merge",
                "dtype": "float32",
                "base_quantization": recipe.quantization.mode,
                "inputs": [i.name for i in session.get_inputs()],
                "dynamic_axes": {"0": "batch", "1": "sequence"},
                "opset": opset,
                "onnxruntime": onnxruntime.__version__,
                "weights_bytes": sum(p.stat().st_size for p in staging.glob(f"{MODEL_FILE}*")),
                "parity": parity_section(figures, samples, tolerance, exact,
                                         "the run's adapter model (PyTorch) vs the ONNX model in onnxruntime (CPU)",
                                         "the run's base was quantized or not fp32"),
            }
            del session
            write_report_and_check(staging, report, "ONNX parity check failed: onnxruntime logits")
            write_onnx_card(staging, out, recipe, metrics, report)
        return report
