"""A saved run directory → the trained model again: evaluate it, predict with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from peftkit import device as devices
from peftkit.data import preprocess
from peftkit.errors import PeftkitError
from peftkit.heads.base import Head
from peftkit.methods.base import Method
from peftkit.modeling import load_base_model, load_tokenizer
from peftkit.pipeline import build_splits
from peftkit.recipe import Recipe, read_yaml, recipe_from_dict
from peftkit.registry import HEADS, METHODS
from peftkit.safety import require_safetensors
from peftkit.training import METRICS_FILE, RECIPE_FILE, split_metrics


@dataclass
class LoadedRun:
    """A trained model with everything needed to use it."""

    directory: Path
    recipe: Recipe
    head: Head
    method: Method
    tokenizer: PreTrainedTokenizerBase
    model: nn.Module

    @property
    def label_names(self) -> list[str]:
        return self.recipe.task.labels


def read_run_recipe(directory: str | Path) -> Recipe:
    """The resolved recipe a run was trained with; a clear error when the directory is not a run.

    Its data files are not checked here: predicting needs none, evaluating reads them (and says so if gone).
    """
    directory = Path(directory)
    recipe_path = directory / RECIPE_FILE
    if not directory.is_dir():
        raise PeftkitError(f"run directory '{directory}' does not exist")
    if not recipe_path.is_file():
        raise PeftkitError(f"'{directory}' is not a peftkit run (no {RECIPE_FILE}); train one with `peftkit train`")
    return recipe_from_dict(read_yaml(recipe_path), source=str(recipe_path), check_data=False)


def load_run(directory: str | Path) -> LoadedRun:
    """Rebuild the trained model of a run directory in evaluation mode."""
    directory = Path(directory)
    recipe = read_run_recipe(directory)
    if not (directory / METRICS_FILE).is_file():
        raise PeftkitError(
            f"'{directory}' is an unfinished run (no {METRICS_FILE}); continue it with `peftkit train ... --resume`"
        )
    head: Head = HEADS.get(recipe.task.head)(recipe.task)
    method: Method = METHODS.get(recipe.method.name)(recipe.method)
    if recipe.model.attn_implementation == "flash_attention_2" and not (
            torch.cuda.is_available() and devices.flash_attn_installed()):
        recipe.model.attn_implementation = "sdpa"  # trained with flash-attn on a GPU, used here without
    require_safetensors(directory, f"run '{directory}'")
    tokenizer = load_tokenizer(recipe.model, path=str(directory))

    def build_base(path: str | None = None) -> nn.Module:
        model, _ = load_base_model(recipe.model, recipe.quantization, head, recipe.task.labels, path=path)
        return model

    model = method.load(directory, build_base)
    model.eval()
    if torch.cuda.is_available() and recipe.quantization.mode == "none":
        model.to("cuda")
    return LoadedRun(directory, recipe, head, method, tokenizer, model)


def evaluate_run(directory: str | Path) -> dict[str, Any]:
    """Metrics of a saved run on its recipe's test split (rebuilt deterministically)."""
    run = load_run(directory)
    data = build_splits(run.recipe, run.head, run.tokenizer, parts=("test",))
    args = TrainingArguments(
        output_dir=str(run.directory / "eval"),
        per_device_eval_batch_size=run.recipe.train.eval_batch_size,
        eval_accumulation_steps=run.recipe.train.eval_accumulation_steps,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=run.model,
        args=args,
        data_collator=run.head.collator(run.tokenizer),
        compute_metrics=run.head.compute_metrics(run.label_names),
        **run.head.trainer_kwargs(),
    )
    metrics = split_metrics(trainer.evaluate(data.tokenized["test"], metric_key_prefix="test"), "test")
    metrics.update(run.head.samples(run.model, run.tokenizer, data.text["test"], run.recipe.data.max_length))
    return metrics


def saved_metrics(directory: str | Path) -> dict[str, Any]:
    """The metrics a run wrote when it finished training."""
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        raise PeftkitError(f"'{directory}' has no {METRICS_FILE}: the run did not finish")
    return json.loads(path.read_text(encoding="utf-8"))


def predict(directory: str | Path, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """Predictions of a saved run for raw texts, decoded by its head."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise PeftkitError("predict: no text given (pass texts as arguments or --file with one text per line)")
    run = load_run(directory)
    texts = preprocess.apply_texts(run.recipe.preprocess, texts)
    return run.head.predict(run.model, run.tokenizer, texts, run.label_names, batch_size, run.recipe.data.max_length)
