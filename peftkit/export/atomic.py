"""Write a directory all at once: into a temporary sibling, then renamed into place; nothing half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from peftkit import ownership
from peftkit.atomic import replace_dir
from peftkit.errors import PeftkitError

PARTIAL_SUFFIX = ".partial"


def check_destination(out: Path, overwrite: bool, protected: Path | None = None, kind: str = "export",
                      inputs: Iterable[str | Path] = ()) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and never replace ``protected`` (the source run).

    ``overwrite`` replaces only a directory peftkit wrote as a ``kind`` (its manifest says so) that holds
    nothing else, and never the current directory, the home folder or a directory holding ``inputs``.
    """
    if protected is not None:
        source = protected.resolve()
        target = out.resolve()
        if target == source or target in source.parents:
            raise PeftkitError(f"--out '{out}' would replace the run '{protected}' itself; choose another directory")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise PeftkitError(f"--out '{out}': '{parent}' is a file, not a directory")
    if out.exists() and not out.is_dir():
        raise PeftkitError(f"--out '{out}' is a file, not a directory")
    if out.is_dir() and ownership.has_content(out):
        if not overwrite:
            raise PeftkitError(f"--out '{out}' already exists; choose another directory or pass --overwrite")
        ownership.check_not_precious(out, "--out", [*inputs, *([protected] if protected else [])])
        manifest = ownership.read_manifest(out)
        if manifest is None or manifest.get("kind") != kind:
            raise PeftkitError(
                f"--overwrite: --out '{out}' is not a peftkit {kind} (no {ownership.MANIFEST} written by peftkit); "
                "refusing to delete it — choose a new or empty directory"
            )
        foreign = ownership.foreign_entries(out)
        if foreign:
            raise PeftkitError(
                f"--overwrite: --out '{out}' holds files peftkit did not write ({', '.join(foreign[:5])}); "
                "refusing to delete them — move them away or choose another directory"
            )


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
    check_destination(out, overwrite, kind=kind, inputs=inputs)
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
        ownership.record(staging, kind, [p.name for p in staging.iterdir() if p.name != ownership.STAGING_MARKER])
        (staging / ownership.STAGING_MARKER).unlink()
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
