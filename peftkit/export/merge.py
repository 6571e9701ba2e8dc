"""`peftkit export`: a run → merged full weights plain transformers loads, or a clean adapter; parity-checked."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from torch import nn

from peftkit.config.sections import QuantizationSection, Recipe
from peftkit.errors import PeftkitError
from peftkit.export.parity import compare, logits_of, parity_section, sample_batches, write_report_and_check
from peftkit.hardware import auto
from peftkit.hardware import device as devices
from peftkit.heads.base import Head
from peftkit.methods.base import BaseBuilder, Method, PeftMethod
from peftkit.model.config import DTYPES
from peftkit.model.loading import load_base_model, set_pooling
from peftkit.model.quantization import quantization_config
from peftkit.model.weights import release_checkpoint
from peftkit.registry import plugins
from peftkit.rundir.cards import write_export_card
from peftkit.rundir.checks import check_run_files
from peftkit.rundir.destination import check_destination
from peftkit.rundir.load import load_run, load_run_tokenizer, read_run_recipe, run_builder
from peftkit.rundir.metrics import saved_metrics
from peftkit.rundir.staging import locked_output, staged_directory

Mode = Literal["merge", "adapter"]


def check_mergeable(head: Head) -> None:
    """A merged export is loaded by a transformers Auto class; a head built on anything else cannot be."""
    auto = head.auto_class
    if auto is None or not getattr(auto, "__module__", "").startswith("transformers"):
        name = getattr(auto, "__name__", auto)
        raise PeftkitError(
            f"task.head '{head.name}': its model class {name} is not a transformers Auto class, so a merged "
            "export could not be loaded without peftkit; export it with --adapter-only"
        )


def dequantized_builder(recipe: Recipe, head: Head, dtype: str) -> BaseBuilder:
    """Builds the run's base in ``dtype``; a quantized base is loaded as trained, then de-quantized.

    De-quantizing the trained 4-/8-bit weights (not reloading the original ones) keeps the merged model
    equal to what the adapter was trained against.
    """
    model_section = recipe.model.model_copy(update={"dtype": dtype})

    def build(path: str | None = None) -> nn.Module:
        model, _ = load_base_model(model_section, recipe.quantization, head, recipe.task.labels, path=path,
                                   saved_run=True)
        if getattr(model, "is_quantized", False):
            model = model.dequantize().to(DTYPES[dtype])
        return model

    return build


def merged_model(model: nn.Module, method: Method) -> nn.Module:
    """The adapter folded into the base weights (peft's ``merge_and_unload``); other models as they are."""
    if not isinstance(model, PeftModel):
        return model
    try:
        return model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError) as exc:
        raise PeftkitError(
            f"method {method.name}: its adapter cannot be merged into the base ({exc}); use --adapter-only"
        ) from None


def merged_float32(run_model: nn.Module | None, recipe: Recipe, head: Head, method: Method, run_dir: Path,
                   fmt: str) -> nn.Module:
    """The run's adapter merged into its float32 base on the CPU for ``--format fmt``: ``run_model`` (the run as
    loaded, when it is already float32 and unquantized) or the base rebuilt in float32, a 4-/8-bit one de-quantized
    first."""
    model = run_model if run_model is not None else method.load(run_dir, dequantized_builder(recipe, head, "float32"))
    try:
        model = merged_model(model, method)
    except PeftkitError:
        model = None
    if model is None or isinstance(model, PeftModel):
        raise PeftkitError(f"--format {fmt}: method {method.name} cannot be merged into the base, so it has no "
                           "plain model to export; export it with --adapter-only instead")
    return model.to("cpu", torch.float32).eval()


def requantize(directory: Path, head: Head, mode: str, trained: QuantizationSection, max_shard_size: str) -> None:
    """Replace the merged weights in ``directory`` by a bitsandbytes ``mode`` copy (settings of the run's own
    quantization when it had one)."""
    if trained.mode != "none":
        section = trained.model_copy(update={"mode": mode})
    else:  # this machine's compute dtype, as a run here would resolve it
        section = QuantizationSection(mode=mode, compute_dtype=auto.compute_dtype(devices.current()))
    model = head.auto_class.from_pretrained(directory, quantization_config=quantization_config(section))
    release_checkpoint(model)  # the merged float file is deleted next: nothing may keep it mapped
    for weights in [*directory.glob("model*.safetensors"), *directory.glob("model.safetensors.index.json")]:
        weights.unlink()
    model.save_pretrained(directory, max_shard_size=max_shard_size)


def weights_bytes(directory: Path) -> int:
    """Total size of the safetensors files in ``directory``."""
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def open_for_export(run_dir: Path, out: Path, overwrite: bool, tolerance: float,
                    samples: int) -> tuple[Recipe, dict[str, Any], Head, Method]:
    """The run's recipe, saved metrics, head and method, once ``out`` and the parity options are checked."""
    recipe = read_run_recipe(run_dir)
    check_destination(out, overwrite, "export", "--out", protected=run_dir, whole=True)
    metrics = saved_metrics(run_dir)
    check_run_files(run_dir, recipe)
    if tolerance < 0:
        raise PeftkitError(f"--tolerance {tolerance}: must be 0 or more")
    if samples < 1:
        raise PeftkitError(f"--samples {samples}: the parity check needs at least 1 test example")
    return recipe, metrics, *plugins(recipe)


def export_run(run_dir: str | Path, out: str | Path, mode: Mode = "merge", dtype: str | None = None,
               requantize_to: str | None = None, tolerance: float = 1e-4, samples: int = 64,
               max_shard_size: str = "2GB", overwrite: bool = False) -> dict[str, Any]:
    """Export a run to ``out`` and return its parity report (also written to ``out/export_report.json``).

    ``mode="merge"``: the adapter merged into the base (de-quantized first for 4-/8-bit runs), saved as
    sharded safetensors that ``AutoModelFor<Task>.from_pretrained`` loads alone. ``mode="adapter"``: the
    peft adapter and head. The exported model is reloaded and compared with the run's adapter model on
    ``samples`` test examples; the export fails if the difference exceeds ``tolerance`` (relative to the
    largest |logit| when that is above 1) where an exact match is expected (fp32 merge from an fp32 base,
    adapter-only), else the figure is reported.
    """
    run_dir, out = Path(run_dir), Path(out)
    with locked_output(out):  # the whole command: a second one writing --out fails at once
        recipe, metrics, head, method = open_for_export(run_dir, out, overwrite, tolerance, samples)
        dtype = dtype or recipe.model.dtype
        if dtype not in DTYPES:
            raise PeftkitError(f"--dtype '{dtype}': expected one of {', '.join(DTYPES)}")
        if mode == "merge":
            check_mergeable(head)
        elif requantize_to or dtype != recipe.model.dtype:
            raise PeftkitError("--adapter-only exports the adapter as trained; --dtype and --requantize need --merge")
        elif not isinstance(method, PeftMethod):
            raise PeftkitError(f"--adapter-only: the run uses method {method.name}, which has no adapter; use --merge")

        tokenizer = load_run_tokenizer(run_dir, recipe)
        batches = sample_batches(recipe, head, tokenizer, samples)
        run = load_run(run_dir)
        reference = logits_of(run.model, batches)
        device = next(run.model.parameters()).device  # both sides run there: a GPU and a CPU round bf16 apart
        quantized = recipe.quantization.mode != "none"
        exact = mode == "adapter" or (not quantized and not requantize_to and dtype == recipe.model.dtype == "float32")
        with staged_directory(out, overwrite, inputs=[run_dir]) as staging:
            if mode == "merge":
                model = run.model if not quantized and dtype == recipe.model.dtype else None
                run = None
                gc.collect()
                if model is None:
                    model = method.load(run_dir, dequantized_builder(recipe, head, dtype))
                model = merged_model(model, method)
                model.save_pretrained(staging, max_shard_size=max_shard_size)
                merged_bytes = weights_bytes(staging)
                del model
                gc.collect()
                if requantize_to:
                    requantize(staging, head, requantize_to, recipe.quantization, max_shard_size)
                    exported = head.auto_class.from_pretrained(staging)
                else:
                    exported = head.auto_class.from_pretrained(staging, dtype=DTYPES[dtype])
                set_pooling(recipe.model, head, exported, saved_run=True)  # as the card's code does
            else:
                run.model.save_pretrained(staging)
                merged_bytes = weights_bytes(staging)
                run = None
                gc.collect()
                exported = method.load(staging, run_builder(recipe, head))
            if not (requantize_to or (mode == "adapter" and quantized)):  # bitsandbytes placed a quantized one
                exported.to(device)
            tokenizer.save_pretrained(staging)
            figures = compare(reference, logits_of(exported, batches))
            del exported
            report: dict[str, Any] = {
                "run": str(run_dir),
                "mode": mode,
                "dtype": dtype,
                "base_quantization": recipe.quantization.mode,
                "merged_into": None if mode == "adapter" or not isinstance(method, PeftMethod) else (
                    f"de-quantized {recipe.quantization.mode} base ({dtype})" if quantized
                    else f"base weights ({dtype})"
                ),
                "requantized": None if not requantize_to else {
                    "mode": requantize_to,
                    "bytes_before": merged_bytes,
                    "bytes_after": weights_bytes(staging),
                    "note": "loading needs bitsandbytes; the logit difference below is what re-quantizing costs",
                },
                "weights_bytes": weights_bytes(staging),
                "parity": parity_section(figures, samples, tolerance, exact,
                                         "the run's adapter model vs the export reloaded from disk",
                                         "de-quantized, re-quantized or cast weights"),
            }
            write_report_and_check(staging, report, "parity check failed: exported logits")
            write_export_card(staging, out, recipe, metrics, report)
        return report
