"""Which recipe values name a local data file: the one suffix table that validation and loading read."""

from __future__ import annotations

from pathlib import Path

#: File suffix → its reader: a `datasets` builder name, or "conll" (`peftkit.data.conll`).
FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
    ".conll": "conll", ".iob": "conll", ".bio": "conll",
}
#: Suffixes that make a recipe value a local path; a ``.txt`` file is one, in a format that is refused by name.
PATH_SUFFIXES = frozenset({*FORMATS, ".txt"})


def looks_like_path(value: str) -> bool:
    """Whether a recipe value names a local path rather than a catalogue name or a hub id."""
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in PATH_SUFFIXES
