"""Write a directory all at once: into a temporary sibling, then renamed into place; nothing half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peftkit.atomic import replace_dir
from peftkit.errors import PeftkitError


def check_destination(out: Path, overwrite: bool, protected: Path | None = None) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and never replace ``protected`` (the source run)."""
    if protected is not None:
        source = protected.resolve()
        target = out.resolve()
        if target == source or target in source.parents:
            raise PeftkitError(f"--out '{out}' would replace the run '{protected}' itself; choose another directory")
    if out.exists() and not out.is_dir():
        raise PeftkitError(f"--out '{out}' is a file, not a directory")
    if out.exists() and not overwrite:
        raise PeftkitError(f"--out '{out}' already exists; choose another directory or pass --overwrite")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out``; on success it replaces ``out`` in one rename.

    On any error the temporary directory (and any parent created for it) is removed and ``out`` is left
    as it was; an ``OSError`` (a full disk, a permission) becomes a one-line PeftkitError.
    """
    out = Path(out)
    check_destination(out, overwrite)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    staging: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the export is an ordinary directory
        yield staging
        replace_dir(staging, out)
    except OSError as exc:
        raise PeftkitError(f"writing '{out}' failed: {exc.strerror or exc}; nothing was written") from exc
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # innermost first
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
