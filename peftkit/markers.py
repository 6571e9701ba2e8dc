"""Work folders marked as a live peftkit process's own: a marker file inside, held under an ``flock``.

The kernel drops the lock however the process ends (``kill -9`` included), so a folder whose marker is no longer
locked is what a dead peftkit left, and the next writer may remove it; a folder without the marker, or whose
marker is a link or not a plain file, is not peftkit's to remove. Export staging folders (``rundir.staging``)
and fetch work folders (``data.partials``) are marked this way.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO


def claim(directory: Path, marker: str) -> IO[str]:
    """Mark the fresh folder ``directory`` as this process's, alive while the returned handle stays open."""
    handle = open(directory / marker, "x", encoding="utf-8")  # noqa: SIM115 - held by the caller
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def is_abandoned(directory: Path, marker: str) -> bool:
    """Whether ``directory`` (a folder, not a link) holds ``marker`` (a plain file) that no process locks."""
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return False
        fd = os.open(directory / marker, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # not a folder, a link, or no marker: not ours
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # locked: its writer is alive
        return False
    finally:
        os.close(fd)  # also drops the lock just taken
    return True


def remove_abandoned(candidates: Iterable[Path], marker: str) -> list[Path]:
    """Delete the ``candidates`` that are abandoned work folders of ``marker``; returns them."""
    try:
        removed = [path for path in candidates if is_abandoned(path, marker)]
    except OSError:  # the parent folder cannot be listed
        return []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
