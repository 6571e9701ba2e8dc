"""README sections generated from code are up to date (run `python tools/docs.py` to refresh them)."""

from __future__ import annotations

from pathlib import Path

from tools.docs import render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_generated_sections_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "README is stale: run `python tools/docs.py` and commit README.md"


def test_readme_documents_every_cli_verb() -> None:
    from peftkit.cli import build_parser

    text = README.read_text(encoding="utf-8")
    verbs = build_parser()._subparsers._group_actions[0].choices
    missing = [verb for verb in verbs if f"peftkit {verb}" not in text]
    assert not missing, f"README does not document: {missing}"
