"""What peftkit may delete: directories it can prove it wrote, and the lock that keeps two runs apart.

A run or export directory holds a manifest (``.peftkit-manifest.json``) listing the entries peftkit wrote
into it; ``--overwrite`` removes those entries and nothing else, and refuses a directory without one.
Staging folders carry a marker held under an ``flock`` while their writer lives, so a folder left by a
killed peftkit is recognised as its own and removed. A run directory is locked (``.peftkit-lock``, an
``flock`` the kernel drops when the process ends) while a run writes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from peftkit.errors import PeftkitError
from peftkit.rundir import atomic
from peftkit.rundir.layout import BOOKKEEPING, LOCK, MANIFEST, STAGING_MARKER


def read_manifest(directory: Path) -> dict | None:
    """The manifest of ``directory`` ({"kind", "entries"}), or None when it has none (or not a readable one)."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        return None
    return data


def record(directory: Path, kind: str, names: Iterable[str]) -> None:
    """Add ``names`` (entries directly inside ``directory``) to its manifest, creating it if needed."""
    manifest = read_manifest(directory) or {"written_by": "peftkit", "kind": kind, "entries": []}
    entries = list(dict.fromkeys([*manifest["entries"], *names]))
    manifest["entries"] = [e for e in entries if e not in BOOKKEEPING]
    atomic.write_text(directory / MANIFEST, json.dumps(manifest, indent=1))


def foreign_entries(directory: Path) -> list[str]:
    """Entries of ``directory`` that its manifest does not list (everything when there is no manifest)."""
    manifest = read_manifest(directory)
    owned = set(manifest["entries"]) if manifest else set()
    return sorted(p.name for p in directory.iterdir() if p.name not in owned and p.name not in BOOKKEEPING)


def has_content(directory: Path) -> bool:
    """Whether ``directory`` holds anything besides peftkit's bookkeeping files."""
    return any(p.name not in BOOKKEEPING for p in directory.iterdir())


def check_not_precious(directory: Path, option: str, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse to delete in the current directory, the home folder, the file system root, or a directory
    that holds one of ``inputs`` (the recipe, the data files, the model)."""
    target = directory.resolve()
    if target == Path.cwd().resolve():
        raise PeftkitError(f"--overwrite: {option} '{directory}' is the current directory; refusing to delete in it")
    if target == Path.home().resolve() or target == Path(target.anchor):
        raise PeftkitError(f"--overwrite: {option} '{directory}' is your home folder or the root; refusing")
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            continue
        resolved = path.resolve()
        if resolved == target or target in resolved.parents:
            raise PeftkitError(
                f"--overwrite: {option} '{directory}' holds '{item}', an input of this command; refusing to "
                "delete in it — choose a directory of its own"
            )


def check_owned(directory: Path, kind: str, option: str) -> dict:
    """The manifest of ``directory``, which peftkit must have written as a ``kind``; else a refusal to delete."""
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("kind") != kind:
        raise PeftkitError(
            f"--overwrite: {option} '{directory}' is not a peftkit {kind} (no {MANIFEST} written by peftkit); "
            "refusing to delete anything in it — choose a new or empty directory"
        )
    return manifest


def remove_owned(directory: Path, kind: str, option: str) -> None:
    """Delete the entries ``directory``'s manifest lists; refuse when it is not a peftkit ``kind``."""
    manifest = check_owned(directory, kind, option)
    for name in manifest["entries"]:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (directory / MANIFEST).unlink()


class DirectoryLock:
    """An exclusive ``flock`` on ``directory/.peftkit-lock``, naming its holder; released on exit or death."""

    def __init__(self, directory: Path, option: str = "output_dir") -> None:
        self.directory, self.option = directory, option
        self._handle: IO[str] | None = None

    def acquire(self) -> DirectoryLock:
        handle = open(self.directory / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise PeftkitError(
                f"{self.option} '{self.directory}' is being written by another peftkit run ({holder}); "
                "wait for it to finish or choose another output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def check_unlocked(directory: Path, option: str = "output_dir") -> None:
    """Fail at once when another live peftkit run holds ``directory``'s lock; creates nothing."""
    path = directory / LOCK
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = handle.read().strip() or "another process"
            raise PeftkitError(
                f"{option} '{directory}' is being written by another peftkit run ({holder}); "
                "wait for it to finish or choose another output_dir"
            ) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def claim_staging(directory: Path) -> IO[str]:
    """Mark a fresh staging folder as peftkit's own, alive while the returned handle stays open."""
    handle = open(directory / STAGING_MARKER, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def is_stale_staging(directory: Path) -> bool:
    """A staging folder peftkit made whose writer is gone (its marker is no longer locked)."""
    marker = directory / STAGING_MARKER
    if not directory.is_dir() or directory.is_symlink() or not marker.is_file():
        return False
    with open(marker, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def remove_stale_staging(parent: Path, pattern: str) -> list[Path]:
    """Delete the stale peftkit staging folders in ``parent`` matching ``pattern``; returns them."""
    removed = [p for p in parent.glob(pattern) if is_stale_staging(p)] if parent.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
