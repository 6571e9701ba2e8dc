"""What the verb modules share: declaring a verb and its recipe arguments, printing metrics."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any

from peftkit.config.limits import SEED_MAX
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


def _whole_number(text: str, low: int, high: int | None, expected: str) -> int:
    """``text`` as a whole number within ``low`` … ``high`` (no upper bound when None); else argparse's error
    saying what was ``expected``."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    return _whole_number(text, 1, None, "a whole number of at least 1")


def seed(text: str) -> int:
    """An argparse ``type``: a seed numpy's generator takes (0 … 2**32-1)."""
    return _whole_number(text, 0, SEED_MAX, f"a seed from 0 to {SEED_MAX}")


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number of at least 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of at least 0, got '{text}'")
    return value


def share(text: str) -> float:
    """An argparse ``type``: a share above 0 and at most 1."""
    value = finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share above 0 and at most 1, got '{text}'")
    return value


_SIZE = re.compile(r"(\d+)\s*(KB|MB|GB|KIB|MIB|GIB)?", re.IGNORECASE)
_UNITS = {None: 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def byte_size(text: str) -> int:
    """An argparse ``type``: a size in bytes, plain or with a unit (500MB, 2GB, 1GiB), at least 1 byte."""
    match = _SIZE.fullmatch(text.strip())
    value = int(match[1]) * _UNITS[match[2] and match[2].upper()] if match else 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500MB, 2GB or 1GiB (bytes without a unit), got '{text}'")
    return value


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
