"""Write a directory all at once: into a temporary sibling, then renamed into place; nothing half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from peftkit import markers
from peftkit.errors import PeftkitError
from peftkit.rundir import ownership
from peftkit.rundir.atomic import TargetChanged, replace_checked_dir
from peftkit.rundir.destination import check_destination, check_parents
from peftkit.rundir.layout import STAGING_MARKER

PARTIAL_SUFFIX = ".partial"


@contextmanager
def locked_output(out: Path, option: str = "--out") -> Iterator[None]:
    """Hold the lock of ``out``, a directory written whole (export, fuse), for the whole command.

    The lock is a hidden file beside ``out`` (``out`` itself is replaced), removed on release with any parent
    folder made for it; a second export to ``out`` fails at once. Taken once per process: nested uses share it.
    """
    out = Path(out)
    if ownership.DirectoryLock.held(out, beside=True) is not None:
        yield
        return
    check_parents(out, option)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PeftkitError(f"{option} '{out}': its folder cannot be created ({exc.strerror})") from None
        lock = ownership.DirectoryLock(out, option, beside=True).acquire()
        try:
            yield
        finally:
            lock.release()
    finally:
        for parent in created:  # innermost first
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


@contextmanager
def staged_directory(out: Path, overwrite: bool = False, kind: str = "export",
                     inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out``; on success it replaces ``out`` in one rename.

    All of it happens under ``out``'s lock (``locked_output``). ``out`` is checked before and again right
    before the rename, which happens only if ``out`` is still what that check passed: one created or
    replaced meanwhile by someone else is refused and left as it is. The staging directory carries a marker
    held while this process lives, so one left by a killed peftkit is removed by the next write to ``out``.
    The result gets a manifest listing what peftkit wrote. On any error the temporary directory is removed
    and ``out`` is left as it was; an ``OSError`` or a safetensors write error (a full disk, a permission)
    becomes a one-line PeftkitError.
    """
    out = Path(out)
    inputs = list(inputs)
    with locked_output(out):
        check_destination(out, overwrite, kind, "--out", inputs, whole=True, locked=True)
        existed = os.path.lexists(out)
        staging: Path | None = None
        marker = None
        try:
            markers.remove_abandoned(out.parent.glob(f".{out.name}.*{PARTIAL_SUFFIX}"), STAGING_MARKER)
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX, dir=out.parent))
            marker = markers.claim(staging, STAGING_MARKER)
            yield staging
            ownership.record(staging, kind, [p.name for p in staging.iterdir() if p.name != STAGING_MARKER])
            (staging / STAGING_MARKER).unlink()
            expected = _checked_again(out, existed, overwrite, kind, inputs)
            replace_checked_dir(staging, out, expected)
        except TargetChanged as exc:
            raise PeftkitError(f"--out '{out}': {exc.strerror}, so it is left as it is and the export was not "
                               "written; choose another directory or run it again") from None
        except (OSError, SafetensorError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise PeftkitError(f"writing '{out}' failed: {reason}; nothing was written") from exc
        finally:
            if marker is not None:
                marker.close()
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _checked_again(out: Path, existed: bool, overwrite: bool, kind: str,
                   inputs: list[str | Path]) -> tuple[int, int] | None:
    """``out`` checked again under the lock, right before the rename: its device and inode (None: absent)."""
    try:
        check_destination(out, overwrite, kind, "--out", inputs, whole=True, locked=True)
    except PeftkitError:
        if existed:
            raise
        raise PeftkitError(f"--out '{out}' was created by something else while this command ran; it is left as "
                           "it is and nothing was written — choose another directory") from None
    return ownership.identity(out, follow=False) if os.path.lexists(out) else None
