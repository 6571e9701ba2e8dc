"""peftkit: parameter-efficient fine-tuning from named recipes, with benchmarks and export."""

from __future__ import annotations

from typing import Any

from peftkit import quiet

quiet.install()

__version__ = "0.1.0"


def train(recipe: Any, overwrite: bool = False, **overrides: Any) -> Any:
    """Train and evaluate a recipe (name, YAML path or Recipe); see :func:`peftkit.training.run.train`."""
    from peftkit.training.run import train as run_training

    return run_training(recipe, overwrite=overwrite, **overrides)


__all__ = ["__version__", "train"]
