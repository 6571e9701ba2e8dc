"""The folders a fetch works in under ``<cache>/.tmp``: removed on any exit, and after a killed fetch by the next.

Each holds a marker file ``flock``-ed while its fetch lives; the kernel drops that lock however the process ends
(``kill -9`` included), so a folder whose marker is no longer locked is the partial work of a dead peftkit and the
next fetch removes it. A folder without the marker is not peftkit's to remove. (``peftkit.rundir.ownership``
marks a run's staging folders the same way; data sits below rundir, so it keeps this small copy.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

MARKER = ".peftkit-fetching"


@contextlib.contextmanager
def work_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder in ``parent`` marked as live while the block runs, removed on any exit (even Ctrl-C)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    handle = open(path / MARKER, "w", encoding="utf-8")  # noqa: SIM115 - held until the folder is gone
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        handle.close()


def is_stale(path: Path) -> bool:
    """Whether ``path`` is a work folder made by :func:`work_dir` whose process is gone."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        fd = os.open(path / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # not a folder, a link, or no marker: not ours
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # locked: its fetch is alive
        return False
    finally:
        os.close(fd)  # also drops the lock just taken
    return True


def remove_stale(parent: Path) -> list[Path]:
    """Delete the work folders in ``parent`` whose fetch died; returns them."""
    try:
        candidates = list(parent.iterdir())
    except OSError:
        return []
    removed = [p for p in candidates if is_stale(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
