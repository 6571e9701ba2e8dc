"""The folders a fetch works in under ``<cache>/.tmp``: removed on any exit, and after a killed fetch by the next.

Each holds a marker file ``flock``-ed while its fetch lives; the kernel drops that lock however the process ends
(``kill -9`` included), so a folder whose marker is no longer locked is the partial work of a dead peftkit and the
next fetch removes it (``peftkit.markers``). A folder without the marker is not peftkit's to remove.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from peftkit import markers

MARKER = ".peftkit-fetching"


@contextlib.contextmanager
def work_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder in ``parent`` marked as live while the block runs, removed on any exit (even Ctrl-C)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    handle = markers.claim(path, MARKER)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        handle.close()
