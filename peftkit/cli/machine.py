"""Verbs about this machine and what fits on it: `estimate`, `env`."""

from __future__ import annotations

import argparse

from peftkit.cli.common import Verbs, positive_int, recipe_args, verb


def add_estimate(verbs: Verbs) -> None:
    """Declare `peftkit estimate RECIPE [overrides] [--nproc N]`."""
    estimate = verb(verbs, "estimate", cmd_estimate, "predict a recipe's peak training memory without training")
    recipe_args(estimate)
    estimate.add_argument("--nproc", type=positive_int, default=1,
                          help="processes (GPUs) of the run: with distributed.fsdp the peak is per process, the "
                               "weights, gradients and optimizer state sharded N ways")


def cmd_estimate(args: argparse.Namespace) -> None:
    """Print a recipe's predicted peak training memory, term by term, and whether it fits on each device."""
    from peftkit.config.load import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)  # a schema error stops here, before torch is imported
    from peftkit.hardware import device
    from peftkit.hardware.env import fit_table, fits
    from peftkit.hardware.estimate import DEVICE_RESERVE
    from peftkit.quiet import no_progress_bars

    no_progress_bars()  # a table, not a training: nothing to follow
    rows, source = fits(recipe, [device.current(), *device.reference_gpus()], processes=args.nproc)
    e = rows[0].estimate
    mib = 2**20
    measure = "allocated GPU memory" if e.device == "cuda" else "private memory"
    if e.processes > 1:
        measure += f" per process of {e.processes} (FSDP {recipe.distributed.sharding})"
    print(f"predicted peak training memory on {rows[0].device.label}: {e.total / mib:,.0f} MiB of {measure} "
          f"(longest batch {recipe.train.batch_size} × {e.sequence_length} tokens: {source})")
    for name, value in e.terms():
        print(f"  {name:<18} {value / mib:>10,.1f} MiB")
    print(f"  floor (weights + trainable state) {e.floor / mib:,.1f} MiB; "
          f"trainable parameters {e.trainable_params:,} of {e.total_params:,} (the model's own: {e.base_params:,})")
    how = "saved tensors counted in a traced forward" if e.activations_from == "traced" else "per-layer formula"
    print(f"  evaluation: the larger of the training activations and an evaluation batch "
          f"({recipe.train.eval_batch_size} × {e.sequence_length}: {e.evaluation / mib:,.1f} MiB, of which "
          f"{e.eval_logits / mib:,.1f} MiB evaluation logits with their fp32 copies for the loss)")
    beyond = {"train": f"{e.retained / mib:,.0f} MiB the allocator keeps of freed activations, "
                       f"{max(0, e.transient - e.activations) / mib:,.0f} MiB of transients (optimizer step, "
                       "de-quantized layer) beyond them",
              "evaluate": f"{e.eval_retained / mib:,.0f} MiB the allocator keeps of freed evaluation batches, "
                          f"{e.eval_transient / mib:,.0f} MiB of a quantized layer de-quantized"}[e.peak_phase]
    print(f"  activations: {how}; runtime overhead: {e.overhead / mib:,.0f} MiB for {e.device} and, in "
          f"{e.peak_phase} (the phase predicted to peak; allocator shares for {e.family} methods), {beyond}")
    print("per device, `auto` options resolved for it (reference GPUs: Ampere-class); needs: the peak and, on a GPU, "
          f"{DEVICE_RESERVE['cuda'] / mib:,.0f} MiB the device holds besides (CUDA context, allocator; assumed):")
    print("\n".join(fit_table(rows)))


def add_env(verbs: Verbs) -> None:
    """Declare `peftkit env [RECIPE [overrides]]`."""
    env = verb(verbs, "env", cmd_env,
               "versions, devices and flash-attn for a bug report; with a recipe, whether it fits")
    env.add_argument("recipe", nargs="?", help="also estimate this recipe's peak on each device")
    env.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch_size=8")
    env.set_defaults(trailing="overrides")


def cmd_env(args: argparse.Namespace) -> None:
    """Print versions and devices; with a recipe, its predicted peak on each device."""
    from peftkit.config.load import load_recipe
    from peftkit.hardware import device
    from peftkit.hardware.env import fit_table, fits, report
    from peftkit.quiet import no_progress_bars

    no_progress_bars()
    print("\n".join(report()))
    if args.recipe:
        recipe = load_recipe(args.recipe, args.overrides)
        rows, source = fits(recipe, device.all_devices())
        print(f"{args.recipe}: predicted peak per device (sequence length {rows[0].estimate.sequence_length}: "
              f"{source})")
        print("\n".join(fit_table(rows)))
