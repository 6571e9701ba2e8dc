"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PeftkitError(Exception):
    """A problem with the user's input (recipe, data, model, CLI); shown without a traceback."""


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice (or one whose initials spell ``word``,
    as `lr` does `learning_rate`), or ``""`` when none is close."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if "_" in c and "".join(p[0] for p in c.split("_") if p) == word.lower()]
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
