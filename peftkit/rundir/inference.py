"""Use a saved run: evaluate it on its test split, predict for raw texts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from peftkit.data import preprocess
from peftkit.data.pipeline import build_splits
from peftkit.errors import PeftkitError
from peftkit.rundir.load import LoadedRun, load_run
from peftkit.rundir.metrics import split_metrics
from peftkit.rundir.progress import ProgressTable, replace_printing


def evaluate_run(directory: str | Path, show: bool = True) -> dict[str, Any]:
    """Metrics of a saved run on its recipe's test split (rebuilt deterministically)."""
    return evaluate_with(load_run(directory), show)


def evaluate_with(run: LoadedRun, show: bool = True) -> dict[str, Any]:
    """Metrics of a loaded run on its recipe's test split (rebuilt deterministically), with a progress bar
    (``show``) and nothing written: the Trainer's output folder is a temporary one outside the run."""
    data = build_splits(run.recipe, run.head, run.tokenizer, parts=("test",))
    with tempfile.TemporaryDirectory(prefix="peftkit-eval-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=run.recipe.train.eval_batch_size,
            eval_accumulation_steps=run.recipe.train.eval_accumulation_steps,
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            bf16=run.recipe.train.precision == "bf16",  # the autocast its test metrics were measured under
            fp16=run.recipe.train.precision == "fp16" and torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=run.model,
            args=args,
            data_collator=run.head.collator(run.tokenizer),
            compute_metrics=run.head.compute_metrics(run.label_names),
            **run.head.trainer_kwargs(),
        )
        replace_printing(trainer, ProgressTable(show=show))
        metrics = split_metrics(trainer.evaluate(data.tokenized["test"], metric_key_prefix="test"), "test")
    metrics.update(run.head.samples(run.model, run.tokenizer, data.text["test"], run.recipe.data.max_length))
    return metrics


def texts_to_predict(texts: list[str]) -> list[str]:
    """The non-blank texts; none at all is a one-line error (checked before a run is loaded)."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise PeftkitError("predict: no text given (pass texts as arguments or --file with one text per line)")
    return texts


def predict_with(run: LoadedRun, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """Predictions of a loaded run for non-blank raw texts: its preprocessing, then its head's decoding."""
    texts = preprocess.apply_texts(run.recipe.preprocess, texts)
    return run.head.predict(run.model, run.tokenizer, texts, run.label_names, batch_size, run.recipe.data.max_length)


def predict(directory: str | Path, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """Predictions of a saved run for raw texts, decoded by its head."""
    texts = texts_to_predict(texts)
    return predict_with(load_run(directory), texts, batch_size)
