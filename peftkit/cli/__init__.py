"""`peftkit` command line: parse, call one function, print. User errors are one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from peftkit import quiet
from peftkit.cli import bench, catalog, export, machine, plugins, recipes, runs, train
from peftkit.cli.common import Verbs
from peftkit.errors import PeftkitError

EXIT_USER_ERROR = 2

VERBS: tuple[Callable[[Verbs], None], ...] = (
    recipes.add_recipes, recipes.add_show, recipes.add_cp, recipes.add_validate,
    train.add_train, runs.add_eval, runs.add_predict, export.add_export, export.add_fuse, runs.add_runs, runs.add_plot,
    plugins.add_heads, plugins.add_methods, train.add_sweep, recipes.add_options, bench.add_bench,
    machine.add_estimate, machine.add_env, catalog.add_data, catalog.add_models,
)
"""Each verb's declaration (beside its handler, in its group's module), in the order `peftkit -h` lists them."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (and exit 2), like every other peftkit error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} -h`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `peftkit` parser with every verb."""
    parser = OneLineParser(prog="peftkit", description="Parameter-efficient fine-tuning from named recipes.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(verbs)
    return parser


def _close_progress_bars() -> None:
    """End a progress bar a failed step left open, so the error starts on its own line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `peftkit` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing", None)
    if extra and (trailing is None or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # positionals typed after an option, e.g. `predict RUN --json "text"`
        getattr(args, trailing).extend(extra)
    try:
        quiet.for_cli()
        args.func(args)
    except PeftkitError as exc:
        _close_progress_bars()
        print(f"peftkit: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        _close_progress_bars()
        print(f"peftkit: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    return 0
