"""Adapter model vs exported model on a fixed sample of the run's test data: logit differences, agreement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from peftkit.config.sections import Recipe
from peftkit.data.pipeline import build_splits
from peftkit.errors import PeftkitError
from peftkit.heads.base import Head
from peftkit.rundir.layout import REPORT_FILE

Batches = list[dict[str, torch.Tensor]]


def sample_batches(recipe: Recipe, head: Head, tokenizer: PreTrainedTokenizerBase, samples: int,
                   batch_size: int = 16) -> Batches:
    """The first ``samples`` rows of the run's test split (rebuilt as at training time, preprocessing
    included), padded in batches."""
    test: Dataset = build_splits(recipe, head, tokenizer, parts=("test",)).tokenized["test"]
    tokenized = test.select(range(min(samples, len(test))))
    inputs = [c for c in tokenized.column_names if c in tokenizer.model_input_names]
    rows = tokenized.select_columns(inputs).to_list()
    collate = DataCollatorWithPadding(tokenizer)
    return [dict(collate(rows[i:i + batch_size])) for i in range(0, len(rows), batch_size)]


@torch.no_grad()
def logits_of(model: nn.Module, batches: Batches) -> list[torch.Tensor]:
    """float32 logits of every batch, on the CPU; token-level logits keep only real (unpadded) tokens."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in batches:
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
        if logits.dim() == 3 and "attention_mask" in batch:
            logits = logits[batch["attention_mask"].bool()]
        out.append(logits)
    return out


def compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict[str, Any]:
    """Max / mean absolute logit difference and argmax agreement (per text, or per token for token heads)."""
    ref, oth = torch.cat(reference), torch.cat(other)
    diff = (ref - oth).abs()
    return {
        "max_abs_logit_diff": float(diff.max()) if diff.numel() else 0.0,
        "mean_abs_logit_diff": float(diff.mean()) if diff.numel() else 0.0,
        "max_abs_logit": float(ref.abs().max()) if ref.numel() else 0.0,
        "prediction_agreement": float((ref.argmax(-1) == oth.argmax(-1)).float().mean()) if len(ref) else 1.0,
        "compared": len(ref),
    }


def parity_section(figures: dict[str, Any], samples: int, tolerance: float, exact: bool, compared: str,
                   unchecked: str) -> dict[str, Any]:
    """The report's ``parity`` entry: ``compare``'s figures, and whether they were held to ``tolerance`` (``exact``)
    or only reported (``unchecked`` says why); ``compared`` names the two models."""
    return {
        **figures,
        "samples": samples,
        "tolerance": tolerance if exact else None,
        "checked": exact,
        "note": f"{compared}, on the first test examples (compared counts tokens for token-level heads)"
                + ("" if exact else f"; report only: {unchecked}"),
    }


def write_report_and_check(staging: Path, report: dict[str, Any], what: str) -> None:
    """Write ``report`` as the export's report file, then fail when its parity was checked and is off by more
    than the tolerance, scaled by the largest |logit| above 1 (fp32 rounding grows with the logits' size)."""
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    parity = report["parity"]
    allowed = parity["tolerance"] * max(1.0, parity["max_abs_logit"]) if parity["checked"] else float("inf")
    if parity["max_abs_logit_diff"] > allowed:
        raise PeftkitError(
            f"{what} differ from the run's by up to {parity['max_abs_logit_diff']:.2e} (tolerance "
            f"{parity['tolerance']:g} × largest |logit| {parity['max_abs_logit']:.3g}, at least 1); nothing was written"
        )
