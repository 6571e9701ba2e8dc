"""Write a directory all at once: into a temporary sibling, then renamed into place; nothing half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from peftkit.errors import PeftkitError
from peftkit.rundir import ownership
from peftkit.rundir.atomic import replace_dir
from peftkit.rundir.destination import check_destination
from peftkit.rundir.layout import STAGING_MARKER

PARTIAL_SUFFIX = ".partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_directory(out: Path, overwrite: bool = False, kind: str = "export",
                     inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out``; on success it replaces ``out`` in one rename.

    The staging directory carries a marker held while this process lives, so one left by a killed peftkit
    is removed by the next write to ``out``. The result gets a manifest listing what peftkit wrote. On any
    error the temporary directory (and any parent created for it) is removed and ``out`` is left as it
    was; an ``OSError`` or a safetensors write error (a full disk, a permission) becomes a one-line
    PeftkitError.
    """
    out = Path(out)
    inputs = list(inputs)
    check_destination(out, overwrite, kind, "--out", inputs, whole=True)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    staging: Path | None = None
    marker = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        ownership.remove_stale_staging(out.parent, f".{out.name}.*{PARTIAL_SUFFIX}")
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX, dir=out.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the export is an ordinary directory
        marker = ownership.claim_staging(staging)
        yield staging
        ownership.record(staging, kind, [p.name for p in staging.iterdir() if p.name != STAGING_MARKER])
        (staging / STAGING_MARKER).unlink()
        replace_dir(staging, out)
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PeftkitError(f"writing '{out}' failed: {reason}; nothing was written") from exc
    finally:
        if marker is not None:
            marker.close()
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # innermost first
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
