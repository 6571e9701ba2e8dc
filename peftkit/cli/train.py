"""Verbs that train: `train`, `sweep`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from peftkit.cli.common import Verbs, positive_int, print_metrics, recipe_args, seed, verb

if TYPE_CHECKING:  # the CLI imports training only when a command runs
    from peftkit.training.run import RunResult


def add_train(verbs: Verbs) -> None:
    """Declare `peftkit train RECIPE [overrides] [--output-dir DIR] [--overwrite] [--resume] [--nproc N]
    [--quiet | --json]`."""
    train = verb(verbs, "train", cmd_train, "train and evaluate a recipe")
    recipe_args(train)
    train.add_argument("--output-dir", help="where to write the run (same as output_dir=…)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in the output directory")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last complete checkpoint in the output directory (train.resume=auto)")
    train.add_argument("--nproc", type=int, default=1,
                       help="data-parallel processes on this machine, started through torchrun (DDP; FSDP / "
                            "DeepSpeed from the recipe's distributed section)")
    output = train.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true",
                        help="print only the closing summary and errors: no header, progress bars or log table")
    output.add_argument("--json", action="store_true",
                        help="print only the final metrics, as one JSON object on stdout (the rest goes to stderr)")


def cmd_train(args: argparse.Namespace) -> None:
    """Train and evaluate a recipe, in this process or in `--nproc` processes started through torchrun."""
    from peftkit.config.load import load_recipe
    from peftkit.hardware.preflight import check_machine
    from peftkit.quiet import no_progress_bars
    from peftkit.rundir.destination import check_destination, run_inputs
    from peftkit.training import distributed
    from peftkit.training.run import train

    recipe = load_recipe(args.recipe, args.overrides)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    if args.resume:
        recipe.train.resume = "auto"
    if args.nproc != 1:  # check here once, then run this same command in N processes
        if not args.resume:
            check_destination(Path(recipe.output_dir or "runs/run"), args.overwrite, "run", "output_dir",
                              [args.recipe, *run_inputs(recipe)], locked=True)
        check_machine(recipe)
        argv = ["train", args.recipe, *args.overrides, *(["--output-dir", args.output_dir] if args.output_dir else [])]
        argv += [flag for flag, on in (("--overwrite", args.overwrite), ("--quiet", args.quiet),
                                       ("--json", args.json)) if on]
        distributed.launch(args.nproc, argv + (["--resume"] if args.resume else []))
        return
    if args.quiet or args.json:
        no_progress_bars()
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            result = train(recipe, overwrite=args.overwrite, protect=[args.recipe], quiet=args.quiet or args.json,
                           name=Path(args.recipe).stem)
        distributed.end_process_group(after_peers=True)
    finally:  # a torchrun worker: the command owns its process group (a failed one: not waiting for its peers)
        distributed.end_process_group()
    if distributed.is_main_process():
        _print_report(result, args.json)
    if distributed.world_size() > 1:  # a launcher's worker: nothing may run after this (see leave_worker)
        distributed.leave_worker()


def _print_report(result: RunResult, as_json: bool) -> None:
    """Print a finished run's test metrics, samples, figures and folder (or one JSON object)."""
    if as_json:
        print(json.dumps({"output_dir": str(result.output_dir), **result.metrics}, default=str))
        return
    m = result.metrics
    print_metrics(f"test metrics ({m['test_examples']} examples):", m["test"])
    for sample in m["test"].get("samples", []):
        print(f"  sample: {sample['prompt']!r} → {sample['response']!r} (reference {sample['reference']!r})")
    print(
        f"trained {m['train']['steps']} steps in {m['train']['seconds']:.0f} s; "
        f"trainable parameters {m['parameters']['trainable']:,} ({m['parameters']['trainable_percent']:.2f} %)"
    )
    print(f"run saved to {result.output_dir}")


def add_sweep(verbs: Verbs) -> None:
    """Declare `peftkit sweep RECIPE [overrides] --space FILE [--trials N] …`."""
    sweep = verb(verbs, "sweep", cmd_sweep, "search recipe values with Optuna; writes trials.csv and best.yaml")
    recipe_args(sweep)
    sweep.add_argument("--space", required=True, help="YAML: dotted key → {low, high[, log, step]} or [choices]")
    sweep.add_argument("--trials", type=positive_int, default=10, help="trainings to run")
    sweep.add_argument("--output-dir", help="where trials.csv and best.yaml go (default runs/sweeps/<recipe>)")
    sweep.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                       help="stop unpromising trials early from their validation scores (needs train.eval_strategy)")
    sweep.add_argument("--seed", type=seed, default=0, help="seed of Optuna's sampler")
    sweep.add_argument("--overwrite", action="store_true", help="replace an earlier sweep in the output directory")


def cmd_sweep(args: argparse.Namespace) -> None:
    """Search a recipe's values with Optuna; print the trials and where the best recipe went."""
    from peftkit.config.overrides import parse_override
    from peftkit.sweep import format_table, sweep

    overrides = dict(parse_override(o) for o in args.overrides)
    result = sweep(args.recipe, args.space, args.trials, args.output_dir, overrides, pruner=args.pruner,
                   seed=args.seed, overwrite=args.overwrite)
    print(format_table(result.rows))
    print(f"best {result.metric} {result.best_value:.4f} with {result.best_params}")
    print(f"best recipe written to {result.best_recipe}; train it with `peftkit train {result.best_recipe}`")
