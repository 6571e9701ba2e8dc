"""Local data files read by their suffix, through the one suffix table (peftkit.config.paths), which recipe
validation reads too: the two agree on which values name a file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from peftkit.config.paths import FORMATS
from peftkit.data.conll import read_conll
from peftkit.errors import PeftkitError, first_line
from peftkit.quiet import logger_silenced

if TYPE_CHECKING:
    from datasets import Dataset


def read_file(path: str | Path) -> Dataset:
    """One local file as a Dataset; the format comes from the suffix."""
    path = Path(path)
    if path.is_dir():
        raise PeftkitError(f"data file '{path}' is a directory; name a data file inside it")
    if path.exists() and not path.is_file():
        raise PeftkitError(f"data file '{path}' is not a regular file (a FIFO or device)")
    reader = FORMATS.get(path.suffix.lower())
    if reader is None:
        raise PeftkitError(
            f"data file '{path}': unsupported format '{path.suffix}' (expected one of {', '.join(FORMATS)})"
        )
    if not path.is_file():
        raise PeftkitError(f"data file '{path}' does not exist")
    if reader == "conll":
        return read_conll(path)
    kwargs: dict = {}
    if reader == "csv":  # only empty cells are missing: "NA", "null" or "None" are text
        kwargs.update(keep_default_na=False, na_values=[""])
    if path.suffix.lower() == ".tsv":
        kwargs["delimiter"] = "\t"
    from datasets import load_dataset

    try:
        # read into memory, cache nothing; a parser's error is reported below, not also logged by datasets
        with logger_silenced("datasets"), tempfile.TemporaryDirectory(prefix="peftkit-data-") as cache:
            loaded = load_dataset(reader, data_files=str(path), split="train", cache_dir=cache,
                                  keep_in_memory=True, **kwargs)
    except UnicodeDecodeError as exc:
        raise PeftkitError(f"data file '{path}': not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:  # datasets wraps parser errors in many types; the message is what matters
        cause = exc.__cause__ or exc
        if isinstance(cause, UnicodeDecodeError):
            raise PeftkitError(f"data file '{path}': not UTF-8 text ({cause.reason})") from None
        first = first_line(cause)
        raise PeftkitError(f"data file '{path}': could not be read as {reader} ({first})") from None
    if len(loaded) == 0:
        raise PeftkitError(f"data file '{path}' holds no rows")
    return loaded
