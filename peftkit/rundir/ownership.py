"""What peftkit may delete: directories it can prove it wrote, and the lock that keeps two runs apart.

A run or export directory holds a manifest (``.peftkit-manifest.json``) listing the entries peftkit wrote
into it; ``--overwrite`` removes those entries and nothing else, and refuses a directory without one.
(Staging folders left by a killed peftkit are recognised by ``peftkit.markers``.) A run directory is locked
(``.peftkit-lock``, an ``flock`` the kernel drops when the process ends) while a run writes it.

Every bookkeeping file is read back as untrusted input: a symlinked one is refused, never followed, and a
manifest must list plain names directly inside its folder, or nothing is deleted on its word.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, ClassVar

from peftkit.errors import PeftkitError
from peftkit.rundir import atomic
from peftkit.rundir.layout import BOOKKEEPING, LOCK, MANIFEST, STAGING_MARKER


class DestinationChanged(PeftkitError):
    """The directory a command checked is no longer what it writes into: moved, replaced, or now holding a file
    peftkit did not write where it would save one. Nothing was written into it."""


#: How a lock file that its holder let go of begins.
RELEASED = "released"

#: The largest manifest or lock file peftkit reads back; anything bigger is not one it wrote.
MAX_BOOKKEEPING_BYTES = 1 << 20


def open_bookkeeping(path: Path, flags: int = os.O_RDONLY) -> int:
    """A descriptor of the bookkeeping file ``path``, never following a symlink (refused, as is anything that is
    not a plain file); raises FileNotFoundError when there is none."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PeftkitError(f"'{path}' is a symlink; peftkit does not follow it — delete it if you did not put "
                               "it there") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PeftkitError(f"'{path}' is not a plain file; peftkit does not use it — delete it if you did not put "
                           "it there")
    return fd


def check_entry_name(name: object) -> str | None:
    """Why ``name`` is not an entry peftkit could have written directly inside a directory (None when it is):
    a plain single name, no separator, not ``.`` or ``..``, not a bookkeeping file."""
    if not isinstance(name, str):
        return f"an entry that is not a name ({name!r})"
    if name in ("", ".", "..") or "/" in name or "\x00" in name or Path(name).name != name:
        return f"'{name}', which is not a plain name inside the folder"
    if name in (*BOOKKEEPING, STAGING_MARKER):
        return f"'{name}', one of peftkit's own bookkeeping files"
    return None


def read_manifest(directory: Path) -> dict | None:
    """The manifest of ``directory`` ({"kind", "entries"}), or None when it has none.

    What it says is checked like any input: a symlinked, unreadable or malformed manifest, or one listing an
    entry outside the folder, is one PeftkitError that names the file, and nothing is deleted on its word.
    """
    path = directory / MANIFEST
    try:
        fd = open_bookkeeping(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _malformed(path, f"it cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_BOOKKEEPING_BYTES + 1)
    if len(raw) > MAX_BOOKKEEPING_BYTES:
        raise _malformed(path, f"it is larger than {MAX_BOOKKEEPING_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _malformed(path, "it is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list) or not isinstance(data.get("kind"), str):
        raise _malformed(path, 'expected {"kind": "...", "entries": [names]}')
    for name in data["entries"]:
        problem = check_entry_name(name)
        if problem:
            raise _malformed(path, f"it lists {problem}")
    return data


def _malformed(path: Path, what: str) -> PeftkitError:
    return PeftkitError(f"'{path}' is not a manifest peftkit wrote: {what}; peftkit cannot tell what it wrote in that "
                        "folder, so it deletes nothing there — delete the folder yourself if it is yours, or choose "
                        "another output directory")


def record(directory: Path, kind: str, names: Iterable[str]) -> None:
    """Add ``names`` (entries directly inside ``directory``) to its manifest, creating it if needed."""
    manifest = read_manifest(directory) or {"written_by": "peftkit", "kind": kind, "entries": []}
    entries = list(dict.fromkeys([*manifest["entries"], *names]))
    manifest["entries"] = [e for e in entries if check_entry_name(e) is None]
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
    """Delete the entries ``directory``'s manifest lists; refuse when it is not a peftkit ``kind``.

    Each entry is a plain name checked by ``read_manifest``; a symlink entry is unlinked, never followed.
    """
    manifest = check_owned(directory, kind, option)
    for name in manifest["entries"]:
        path = directory / name
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (directory / MANIFEST).unlink()


def identity(path: Path, follow: bool = True) -> tuple[int, int]:
    """The device and inode ``path`` names (``follow``: through a symlink)."""
    info = os.stat(path) if follow else os.lstat(path)
    return info.st_dev, info.st_ino


def _holder(handle: IO[str]) -> str:
    """Who holds a lock, as its file says: one short printable line (the file is read back, so untrusted)."""
    handle.seek(0)
    lines = handle.read(200).splitlines()
    return "".join(c for c in lines[0] if c.isprintable())[:120] if lines else "another process"


def _same_file(handle: IO[str], path: Path) -> bool:
    """Whether ``path`` (not followed) is the file ``handle`` has open."""
    try:
        info, mine = os.lstat(path), os.fstat(handle.fileno())
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (mine.st_dev, mine.st_ino)


class DirectoryLock:
    """An exclusive ``flock`` on ``directory/.peftkit-lock``, naming its holder; released on exit or death. A
    release rewrites the file to say it was released (a finished run keeps it, reading as no live lock).

    ``beside``: the lock is a hidden ``.NAME.peftkit-lock`` next to ``directory`` instead, deleted on release
    (for a directory replaced whole, such as an export). The lock remembers which directory it was taken in
    (device and inode): ``check_unchanged`` tells whether ``directory`` is still that one before anything is
    written into it. The locks this process holds are found again with ``held``.
    """

    _held: ClassVar[dict[str, DirectoryLock]] = {}

    def __init__(self, directory: Path, option: str = "output_dir", beside: bool = False) -> None:
        self.directory, self.option, self.path = directory, option, lock_path(directory, beside)
        self.remove = beside
        self._handle: IO[str] | None = None
        self._identity: tuple[int, int] | None = None

    def acquire(self) -> DirectoryLock:
        try:
            fd = open_bookkeeping(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise PeftkitError(f"{self.option} '{self.directory}': cannot create its lock '{self.path}' "
                               f"({exc.strerror})") from None
        handle = os.fdopen(fd, "r+", encoding="utf-8", errors="replace")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _same_file(handle, self.path):  # its holder removed it on release: busy until just now
                raise OSError(errno.EAGAIN, "the lock file was replaced")
        except OSError:
            holder = _holder(handle)
            handle.close()
            raise self._busy(holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._handle = handle
        self._identity = identity(self.directory) if self.directory.exists() else None
        DirectoryLock._held[os.path.abspath(self.path)] = self
        return self

    def _busy(self, holder: str) -> PeftkitError:
        return PeftkitError(f"{self.option} '{self.directory}' is being written by another peftkit run ({holder}); "
                            f"wait for it to finish or choose another {self.option}")

    def check_unchanged(self) -> None:
        """Raise DestinationChanged unless ``directory`` is still the one the lock was taken in, lock and all."""
        assert self._handle is not None, "check_unchanged needs the lock held"
        try:
            same = identity(self.directory) == self._identity and _same_file(self._handle, self.path)
        except OSError:
            same = False
        if not same:
            raise DestinationChanged(f"{self.option} '{self.directory}' was moved or replaced while peftkit was "
                                     "writing it; nothing more is written there")

    def release(self) -> None:
        if self._handle is None:
            return
        DirectoryLock._held.pop(os.path.abspath(self.path), None)
        with contextlib.suppress(OSError):
            if self.remove:
                if _same_file(self._handle, self.path):
                    self.path.unlink()
            else:  # the file stays (unlinking one another process may be about to lock is racy): it says so
                self._handle.seek(0)
                self._handle.truncate()
                self._handle.write(f"{RELEASED} by pid {os.getpid()} on {socket.gethostname()} at "
                                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}: no process holds it")
                self._handle.flush()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @classmethod
    def held(cls, directory: Path, beside: bool = False) -> DirectoryLock | None:
        """The lock on ``directory`` this process holds, if any."""
        return cls._held.get(os.path.abspath(lock_path(directory, beside)))


def lock_path(directory: Path, beside: bool = False) -> Path:
    """Where the lock of ``directory`` is: inside it, or ``beside`` it."""
    return directory.parent / f".{directory.name}{LOCK}" if beside else directory / LOCK


def check_unlocked(directory: Path, option: str = "output_dir") -> None:
    """Fail at once when another live peftkit run holds ``directory``'s lock; creates nothing."""
    path = directory / LOCK
    try:
        fd = open_bookkeeping(path)
    except FileNotFoundError:
        return
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise DirectoryLock(directory, option)._busy(_holder(handle)) from None
        fcntl.flock(handle, fcntl.LOCK_UN)
