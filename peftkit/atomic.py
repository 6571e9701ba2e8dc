"""Atomic writes: build a file or directory beside its target, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_dir(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``target``; on success it becomes ``target``.

    On an exception the temporary directory is removed and ``target`` is untouched. A kill
    mid-write leaves only a hidden ``.<name>.tmp-*`` directory next to the target, never a
    half-written ``target``. An existing ``target`` is replaced (``replace=True``) or kept, in
    which case the write raises ``FileExistsError``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield temp
        _fsync_tree(temp)
        if target.exists():
            if not replace:
                raise FileExistsError(f"'{target}' already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            target.rename(old)
            temp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            temp.rename(target)
        _fsync_dir(target.parent)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def atomic_file(target: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``target`` for writing; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(target)
        _fsync_dir(target.parent)
    finally:
        if temp.exists():
            temp.unlink()


def write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_file(target) as handle:
        handle.write(text)


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a leftover of an interrupted atomic write."""
    return path.name.startswith(".") and (".tmp-" in path.name or ".old-" in path.name)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
