"""Verbs listing what recipes can name: `heads`, `methods`."""

from __future__ import annotations

import argparse

from peftkit.cli.common import Verbs, verb


def add_heads(verbs: Verbs) -> None:
    """Declare `peftkit heads`."""
    verb(verbs, "heads", cmd_heads, "list the registered task heads")


def cmd_heads(args: argparse.Namespace) -> None:
    """List the registered task heads and where each comes from."""
    from peftkit.registry import HEADS

    for name, head in HEADS:
        print(f"{name:<16} {head.kind:<26} {head.description}  [{HEADS.origin(name)}]")


def add_methods(verbs: Verbs) -> None:
    """Declare `peftkit methods [--model MODEL]`."""
    methods = verb(verbs, "methods", cmd_methods, "list the fine-tuning methods and what they support")
    methods.add_argument("--model", help="also count trainable parameters on this model (catalogue name or path)")


def cmd_methods(args: argparse.Namespace) -> None:
    """List the fine-tuning methods and what they support (and train, on `--model`)."""
    from peftkit.model.method_table import method_rows

    for row in method_rows(args.model):
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, (14, 6, 6, 17, 10, 0), strict=True)).rstrip())
