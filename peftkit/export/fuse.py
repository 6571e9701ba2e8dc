"""`peftkit fuse`: LoRA adapters of several runs on one base combined with peft's ``add_weighted_adapter``."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.model.loading import load_base_model
from peftkit.registry import build_head
from peftkit.rundir.cards import write_model_card
from peftkit.rundir.checks import check_run_files, head_outputs
from peftkit.rundir.destination import check_destination
from peftkit.rundir.inference import evaluate_run
from peftkit.rundir.layout import METRICS_FILE, RECIPE_FILE
from peftkit.rundir.load import load_run_tokenizer, read_run_recipe
from peftkit.rundir.metrics import saved_metrics
from peftkit.rundir.readback import damaged, shape_mismatch
from peftkit.rundir.staging import locked_output, staged_directory

COMBINATIONS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties")
PRUNING = ("ties", "dare_linear", "dare_ties")  # the combinations that use ``density``
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


@dataclass
class FuseResult:
    """Where the fused run is and how it scored on the test split."""

    output_dir: Path
    metrics: dict[str, Any]


def _check_same_base(runs: list[Path], recipes: list[Recipe]) -> None:
    first = recipes[0]
    keys = {
        "model.name": lambda r: r.model.name,
        "model.revision": lambda r: r.model.revision,
        "quantization.mode": lambda r: r.quantization.mode,
        "task.head": lambda r: r.task.head,
        "task.labels": lambda r: r.task.labels,
    }
    for run, recipe in zip(runs[1:], recipes[1:], strict=True):
        for key, value in keys.items():
            if value(recipe) != value(first):
                raise PeftkitError(
                    f"fuse: runs '{runs[0]}' and '{run}' differ in {key} ({value(first)!r} vs {value(recipe)!r}); "
                    "only adapters trained on the same base with the same head can be fused"
                )


def _lora_config(run: Path, recipe: Recipe) -> PeftConfig:
    config = PeftConfig.from_pretrained(str(run)) if (run / ADAPTER_CONFIG).is_file() else None
    plain = config is not None and config.peft_type == "LORA" and not getattr(config, "use_dora", False)
    if not plain or not (run / ADAPTER_WEIGHTS).is_file():
        raise PeftkitError(
            f"fuse: run '{run}' (method {recipe.method.name}) is not a plain LoRA adapter; add_weighted_adapter "
            "combines LoRA adapters only"
        )
    return config


def _is_lora_key(key: str) -> bool:
    return ".lora_" in key


def _check_same_heads(runs: list[Path], states: list[dict[str, torch.Tensor]]) -> None:
    """The task-head tensors of every run's adapter have the names and shapes of the first run's."""
    first = {k: tuple(v.shape) for k, v in states[0].items() if not _is_lora_key(k)}
    for run, state in zip(runs[1:], states[1:], strict=True):
        heads = {k: tuple(v.shape) for k, v in state.items() if not _is_lora_key(k)}
        if heads != first:
            key = sorted(set(heads) ^ set(first)) or [k for k in sorted(first) if heads[k] != first[k]]
            raise damaged(run, ADAPTER_WEIGHTS, f"holds a task head unlike run '{runs[0]}'s (at {key[0]}), though "
                                                "their recipes agree")


def fuse_runs(runs: list[str | Path], out: str | Path, weights: list[float] | None = None,
              combination: str = "linear", density: float = 0.5, overwrite: bool = False) -> FuseResult:
    """Fuse the LoRA adapters of ``runs`` into one run directory at ``out`` and evaluate it on the test split.

    The LoRA matrices are combined by peft (``combination``: linear, cat, svd, ties, dare_linear,
    dare_ties; ``density`` prunes for ties / DARE). Task heads are trained per run, which peft cannot
    combine: the fused head is their weighted average with the weights normalised to sum to 1.
    """
    runs = [Path(r) for r in runs]
    out = Path(out)
    if len(runs) < 2:
        raise PeftkitError("fuse: name at least two run directories")
    if combination not in COMBINATIONS:
        raise PeftkitError(f"--combination '{combination}': expected one of {', '.join(COMBINATIONS)}")
    weights = list(weights) if weights else [1 / len(runs)] * len(runs)
    if len(weights) != len(runs):
        raise PeftkitError(f"--weights: {len(weights)} values for {len(runs)} runs; give one weight per run")
    if sum(weights) == 0:
        raise PeftkitError("--weights: they sum to 0; the heads could not be averaged")
    if not 0 < density <= 1:
        raise PeftkitError(f"--density {density}: must be in (0, 1]")
    recipes = [read_run_recipe(r) for r in runs]
    saved = [saved_metrics(r) for r in runs]
    for run, recipe in zip(runs, recipes, strict=True):
        check_run_files(run, recipe)
    _check_same_base(runs, recipes)
    configs = [_lora_config(run, recipe) for run, recipe in zip(runs, recipes, strict=True)]
    with locked_output(out):  # the whole command: a second one writing --out fails at once
        for run in runs:
            check_destination(out, overwrite, "run", "--out", protected=run, whole=True)

        first = recipes[0]
        head = build_head(first.task)
        base, head_modules = load_base_model(first.model, first.quantization, head, first.task.labels,
                                             saved_run=True)
        states = [load_file(str(run / ADAPTER_WEIGHTS)) for run in runs]
        _check_same_heads(runs, states)
        total = sum(weights)
        head_state = {
            key.removeprefix(PEFT_PREFIX): sum(
                w / total * s[key].float() for w, s in zip(weights, states, strict=True)
            ).to(states[0][key].dtype)
            for key in states[0] if not _is_lora_key(key)
        }
        unknown = set(head_state) - set(base.state_dict())
        if unknown:
            raise PeftkitError(f"fuse: run '{runs[0]}' holds weights for unknown modules {sorted(unknown)[:3]}")
        try:
            base.load_state_dict(head_state, strict=False)
        except RuntimeError as exc:  # the labels of the runs' recipe.yaml edited alike since they were saved
            error = shape_mismatch(exc, runs[0], ADAPTER_WEIGHTS, len(first.task.labels),
                                   head_outputs(head, first.task.labels))
            if error is None:
                raise
            raise error from None

        names = [f"run{i}" for i in range(len(runs))]
        model = None
        for name, config, state in zip(names, configs, states, strict=True):
            # no task type: peft would wrap the head modules of every adapter, which add_weighted_adapter refuses
            config = replace(config, modules_to_save=None, task_type=None, inference_mode=True)
            if model is None:
                model = get_peft_model(base, config, adapter_name=name)
            else:
                model.add_adapter(name, config)
            set_peft_model_state_dict(model, {k: v for k, v in state.items() if _is_lora_key(k)}, adapter_name=name)
        try:
            model.add_weighted_adapter(names, weights, "fused", combination_type=combination,
                                       density=density if combination in PRUNING else None)
        except ValueError as exc:
            raise PeftkitError(f"fuse: peft cannot combine these adapters with {combination}: {exc}") from None
        fused_config = model.peft_config["fused"]
        fused_state = get_peft_model_state_dict(model, adapter_name="fused")
        base = model.unload()
        targets = fused_config.target_modules
        fused_config = replace(fused_config, modules_to_save=head_modules or None, task_type=configs[0].task_type,
                               target_modules=sorted(targets) if isinstance(targets, set) else targets)
        fused = get_peft_model(base, fused_config)
        set_peft_model_state_dict(fused, {**fused_state, **{PEFT_PREFIX + k: v for k, v in head_state.items()}})

        recipe = read_run_recipe(runs[0])
        for key, value in (("r", fused_config.r), ("alpha", fused_config.lora_alpha),
                           ("target_modules", fused_config.target_modules)):
            if key in type(recipe.method).model_fields:
                setattr(recipe.method, key, value)
        recipe.output_dir = str(out)
        recipe.description = (f"fusion ({combination}, weights {', '.join(f'{w:g}' for w in weights)}) of "
                              f"{', '.join(str(r) for r in runs)}")
        tokenizer = load_run_tokenizer(runs[0], first)
        with staged_directory(out, overwrite, kind="run", inputs=runs) as staging:
            fused.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
            metrics: dict[str, Any] = {
                "test_examples": saved[0].get("test_examples"),
                "fusion": {
                    "runs": [str(r) for r in runs],
                    "weights": weights,
                    "combination": combination,
                    "density": density if combination in PRUNING else None,
                    "rank": fused_config.r,
                    "head": "weighted average of the runs' task heads (weights normalised to sum to 1)",
                    "runs_test": [m.get("test", {}) for m in saved],
                },
            }
            (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")  # a finished run
            with torch.no_grad():
                metrics = {"test": evaluate_run(staging), **metrics}
            (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
            write_model_card(staging, recipe, metrics)
        return FuseResult(out, metrics)
