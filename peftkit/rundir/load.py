"""A saved run directory → the trained model again, in evaluation mode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftkit.config.files import read_yaml
from peftkit.config.load import recipe_from_dict
from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.hardware.device import flash_attention_usable
from peftkit.heads.base import Head
from peftkit.methods.base import Method
from peftkit.model.loading import load_base_model, load_tokenizer
from peftkit.model.weights import require_safetensors
from peftkit.registry import plugins
from peftkit.rundir.layout import METRICS_FILE, RECIPE_FILE


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
        what = "is a file, expected a run directory" if directory.exists() else "does not exist"
        raise PeftkitError(f"run directory '{directory}' {what}")
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
    head, method = plugins(recipe)
    if recipe.model.attn_implementation == "flash_attention_2" and not flash_attention_usable():
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
