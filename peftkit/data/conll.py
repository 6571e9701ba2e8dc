"""CoNLL-style token files (``.conll``, ``.iob``, ``.bio``): one ``word … TAG`` line per token, a blank line between
sentences."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from peftkit.errors import PeftkitError

if TYPE_CHECKING:
    from datasets import Dataset

_SEPARATOR = re.compile(r"[ \t\r\n\f\v]+")


def fields_of(line: str) -> list[str]:
    """The fields of a CoNLL line: split on spaces and tabs only, so a word keeps a non-breaking (or other
    Unicode) space inside it."""
    return [field for field in _SEPARATOR.split(line) if field]


def read_conll(path: Path) -> Dataset:
    """Sentences as ``tokens`` / ``tags`` lists: first column = word, last column = tag; ``-DOCSTART-`` skipped."""
    sentences: list[tuple[list[str], list[str]]] = [([], [])]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PeftkitError(f"data file '{path}': not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(lines, start=1):
        fields = fields_of(line)
        if not fields:
            if sentences[-1][0]:
                sentences.append(([], []))
            continue
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2:
            raise PeftkitError(f"data file '{path}' line {lineno}: expected 'word TAG' (word, tab or space, tag)")
        sentences[-1][0].append(fields[0])
        sentences[-1][1].append(fields[-1])
    rows = [s for s in sentences if s[0]]
    if not rows:
        raise PeftkitError(f"data file '{path}' holds no sentences")
    from datasets import Dataset

    return Dataset.from_dict({"tokens": [t for t, _ in rows], "tags": [g for _, g in rows]})
