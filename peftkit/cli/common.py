"""What the verb modules share: declaring a verb and its recipe arguments, printing metrics."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from peftkit.rundir.metrics import TIMING_KEYS

Verbs = argparse._SubParsersAction
"""The `peftkit VERB` sub-parsers each verb module adds its verbs to."""


def verb(
    verbs: Verbs, name: str, func: Callable[[argparse.Namespace], None], help_text: str
) -> argparse.ArgumentParser:
    """Add the verb ``name``, run by ``func``; ``help_text`` is both its line in `peftkit -h` and its description."""
    sub = verbs.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(func=func)
    return sub


def recipe_args(sub: argparse.ArgumentParser) -> None:
    """Add the `RECIPE [overrides ...]` positionals; overrides may also follow the options."""
    sub.add_argument("recipe", help="recipe name (`peftkit recipes`) or YAML file")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=2 method.r=16")
    sub.set_defaults(trailing="overrides")


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    """Print ``title``, then one line per scalar metric (timings, lists and dicts left out)."""
    print(title)
    for key, value in metrics.items():
        if key in TIMING_KEYS:
            continue
        if isinstance(value, float):
            print(f"  {key:<22} {value:.4f}")
        elif not isinstance(value, (list, dict)):
            print(f"  {key:<22} {value}")
