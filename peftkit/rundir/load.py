"""A saved run directory → the trained model again, in evaluation mode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftkit.config.files import read_yaml
from peftkit.config.load import recipe_from_dict
from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError, first_line
from peftkit.hardware.device import flash_attention_usable
from peftkit.heads.base import Head
from peftkit.methods.base import BaseBuilder, Method
from peftkit.model.loading import load_base_model, load_tokenizer
from peftkit.model.weights import require_safetensors
from peftkit.registry import plugins
from peftkit.rundir.checks import check_run_files, head_outputs
from peftkit.rundir.layout import METRICS_FILE, RECIPE_FILE, TOKENIZER_FILES
from peftkit.rundir.metrics import saved_metrics
from peftkit.rundir.readback import damaged, recipe_problem, shape_mismatch


@dataclass
class LoadedRun:
    """A trained model with everything needed to use it."""

    directory: Path
    recipe: Recipe
    head: Head
    method: Method
    tokenizer: PreTrainedTokenizerBase
    model: nn.Module
    metrics: dict[str, Any]

    @property
    def label_names(self) -> list[str]:
        return self.recipe.task.labels


def _require_run(directory: Path) -> Path:
    """The recipe file of a run directory; a clear error when the directory is not a run."""
    if not directory.is_dir():
        what = "is a file, expected a run directory" if directory.exists() else "does not exist"
        raise PeftkitError(f"run directory '{directory}' {what}")
    if not (directory / RECIPE_FILE).is_file():
        raise PeftkitError(f"'{directory}' is not a peftkit run (no {RECIPE_FILE}); train one with `peftkit train`")
    return directory / RECIPE_FILE


def read_run_recipe(directory: str | Path) -> Recipe:
    """The resolved recipe a run was trained with; a clear error when the directory is not a run.

    Its data files are not checked here: predicting needs none, evaluating reads them (and says so if gone).
    """
    recipe_path = _require_run(Path(directory))
    raw = read_yaml(recipe_path)
    problem = recipe_problem(raw)
    if problem:
        raise damaged(directory, RECIPE_FILE, problem)
    return recipe_from_dict(raw, source=str(recipe_path), check_data=False)


def load_run_tokenizer(directory: str | Path, recipe: Recipe) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a run; files the tokenizer library cannot read are a damaged run, in one line."""
    try:
        return load_tokenizer(recipe.model, path=str(directory))
    except MemoryError:
        raise
    except Exception as exc:  # tokenizers raises many types (plain Exception too) on files it cannot parse
        cause = exc.__context__ if isinstance(exc, PeftkitError) and exc.__context__ else exc
        files = ", ".join(n for n in TOKENIZER_FILES if (Path(directory) / n).is_file()) or "tokenizer files"
        raise damaged(directory, files, f"could not be loaded as its tokenizer ({first_line(cause)})") from None


def run_builder(recipe: Recipe, head: Head) -> BaseBuilder:
    """Builds a saved run's base exactly as it was trained (quantized or not); ``path`` where another folder holds
    its weights."""

    def build(path: str | None = None) -> nn.Module:
        model, _ = load_base_model(recipe.model, recipe.quantization, head, recipe.task.labels, path=path,
                                   saved_run=True)
        return model

    return build


def load_run(directory: str | Path) -> LoadedRun:
    """Rebuild the trained model of a run directory in evaluation mode."""
    directory = Path(directory)
    _require_run(directory)
    if not (directory / METRICS_FILE).is_file():
        raise PeftkitError(
            f"'{directory}' is an unfinished run (no {METRICS_FILE}); continue it with `peftkit train ... --resume`"
        )
    recipe = read_run_recipe(directory)
    metrics = saved_metrics(directory)
    head, method = plugins(recipe)
    if recipe.model.attn_implementation == "flash_attention_2" and not flash_attention_usable():
        recipe.model.attn_implementation = "sdpa"  # trained with flash-attn on a GPU, used here without
    require_safetensors(directory, f"run '{directory}'")
    check_run_files(directory, recipe)
    tokenizer = load_run_tokenizer(directory, recipe)

    saved = " and ".join(n for n in (method.saved_config, method.saved_weights) if n) or "its saved model"
    try:
        model = method.load(directory, run_builder(recipe, head))
    except RuntimeError as exc:  # torch's size mismatch: recipe.yaml edited (its labels) since the run was saved
        error = shape_mismatch(exc, directory, method.saved_weights or "the saved weights",
                               len(recipe.task.labels), head_outputs(head, recipe.task.labels))
        if error is None:
            raise
        raise error from None
    except (TypeError, KeyError, ValueError, AttributeError) as exc:  # files that parse but peft cannot use
        raise damaged(directory, saved, f"could not be loaded ({type(exc).__name__}: {first_line(exc)})") from None
    model.eval()
    if torch.cuda.is_available() and recipe.quantization.mode == "none":
        model.to("cuda")
    return LoadedRun(directory, recipe, head, method, tokenizer, model, metrics)
