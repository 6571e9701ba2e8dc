"""The model card (README.md) written into every run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftkit.data.catalog import DATASETS, MODELS
from peftkit.recipe import Recipe
from peftkit.registry import HEADS

LOADERS = {
    "full": "model = {auto}.from_pretrained(run)",
    "head_only": "# a head-only run holds just the head weights: use `peftkit predict` or peftkit.run.load_run",
}
PEFT_LOADER = (
    "base = {auto}.from_pretrained(\"{base}\"{labels})\n"
    "model = PeftModel.from_pretrained(base, run)"
)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _licences(recipe: Recipe) -> str:
    """Markdown lines stating the licence of each catalogue entry (model, data) the run was built from."""
    lines = []
    if recipe.model.name in MODELS:
        lines.append(f"- model `{recipe.model.name}`: {MODELS[recipe.model.name].licence}")
    if recipe.data.source in DATASETS:
        lines.append(f"- data `{recipe.data.source}`: {DATASETS[recipe.data.source].licence}")
    if not lines:
        return ""
    return "\n## Licences\nThis run inherits the terms of what it was trained from:\n" + "\n".join(lines) + "\n"


def write_model_card(directory: Path, recipe: Recipe, metrics: dict[str, Any]) -> None:
    """A Markdown card: base model, method, data, test metrics and how to load the run."""
    head = HEADS.get(recipe.task.head)
    auto = head.auto_class.__name__
    labels = f", num_labels={len(recipe.task.labels)}" if recipe.task.labels else ""
    loader = LOADERS.get(recipe.method.name, PEFT_LOADER).format(auto=auto, base=recipe.model.name, labels=labels)
    rows = "\n".join(
        f"| {k} | {_format(v)} |" for k, v in metrics.get("test", {}).items() if not isinstance(v, list)
    )
    params = metrics.get("parameters", {})
    trainable, total = (_format(params.get(k, "?")) for k in ("trainable", "total"))
    card = f"""---
library_name: {"transformers" if recipe.method.name == "full" else "peft"}
base_model: {recipe.model.name}
tags: [peftkit, {recipe.method.name}, {recipe.task.head}]
---
# {Path(recipe.output_dir or directory).name}

Trained with [peftkit](https://github.com/peftkit/peftkit). {recipe.description}

- base model: `{recipe.model.name}` ({recipe.model.dtype}, quantization: {recipe.quantization.mode})
- method: `{recipe.method.name}`; trainable parameters: {trainable} of {total}
- task head: `{recipe.task.head}`; labels: {", ".join(recipe.task.labels)}
- data: `{recipe.data.source}`; training examples: {metrics.get("train", {}).get("examples", "?")}

## Test metrics ({metrics.get("test_examples", "?")} examples)
| metric | value |
|---|---|
{rows}
{_licences(recipe)}
## Load it
```python
from peft import PeftModel
from transformers import {auto}
run = "{recipe.output_dir}"  # this directory
{loader}
```
or `peftkit predict <run dir> "some text"`. The full resolved recipe is in `recipe.yaml`.
"""
    (directory / "README.md").write_text(card, encoding="utf-8")
