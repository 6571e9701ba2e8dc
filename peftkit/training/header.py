"""The block `peftkit train` prints before the first step: what is about to be trained, on what, and where to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import DatasetDict
from torch import nn

from peftkit.config.sections import Recipe
from peftkit.hardware import device as devices
from peftkit.model.params import count_parameters


def header_lines(name: str, recipe: Recipe, model: nn.Module, tokenized: DatasetDict, resolved: dict[str, Any],
                 output_dir: Path) -> list[str]:
    """Recipe, model and size, method and trainable share, rows per split, device, the recipe's `auto` settings as
    resolved and the output folder; the training progress adds the step count once the Trainer knows it."""
    trainable, total = count_parameters(model)
    about = " — ".join(part for part in (name, recipe.description) if part)
    rows = " / ".join(f"{len(part):,} {split}" for split, part in tokenized.items())
    t = recipe.train
    auto = ", ".join(f"{key}={value}" for key, value in resolved.items()) or "none"
    return [
        f"peftkit train {about}".rstrip(),
        f"  {'model':<10} {recipe.model.name} ({total:,} parameters)",
        f"  {'method':<10} {recipe.method.name}: {trainable:,} trainable parameters ({100 * trainable / total:.2f} %)",
        f"  {'data':<10} {rows} rows; batch {t.batch_size} × {t.grad_accum} accumulated, max_length "
        f"{recipe.data.max_length}",
        f"  {'device':<10} {devices.current().label}, precision {t.precision}",
        f"  {'auto':<10} {auto}",
        f"  {'output':<10} {output_dir}",
    ]
