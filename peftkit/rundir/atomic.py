"""Atomic writes: build a file or directory beside its target, then rename it into place."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path


def replace_dir(staged: Path, target: Path) -> None:
    """Rename the finished directory ``staged`` to ``target`` (same file system), replacing an old one.

    An old ``target`` is renamed aside first and deleted only after the new one is in place, so at any
    moment ``target`` is either the old directory or the new one, never a mix.
    """
    ordinary_modes(staged)
    _fsync_tree(staged)
    if target.exists():
        _swap(staged, target)
    else:
        staged.rename(target)
    _fsync(target.parent)


def _swap(staged: Path, target: Path, expected: tuple[int, int] | None = None) -> None:
    """Rename ``target`` aside and ``staged`` into its place, then delete the old one. With ``expected`` (device,
    inode), the directory moved aside must be that one, else it is put back and TargetChanged is raised."""
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    aside.rmdir()
    try:
        target.rename(aside)
    except FileNotFoundError:
        if expected is None:
            raise
        raise TargetChanged(errno.ENOENT, "it was moved away meanwhile") from None
    if expected is not None:
        info = os.lstat(aside)
        if (info.st_dev, info.st_ino) != expected:
            aside.rename(target)
            raise TargetChanged(errno.EEXIST, "it was replaced by something else meanwhile")
    try:
        staged.rename(target)
    except OSError:
        aside.rename(target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


class TargetChanged(OSError):
    """The target of ``replace_checked_dir`` is not the one checked before: nothing was replaced."""


def replace_checked_dir(staged: Path, target: Path, expected: tuple[int, int] | None) -> None:
    """``replace_dir``, only if ``target`` is still what was checked: absent (``expected`` None) or the
    directory with that device and inode (the name itself, not followed); else TargetChanged, ``target`` as it is.

    An absent target is taken by a plain rename, which the kernel refuses onto anything but an empty directory;
    an existing one is renamed aside, and put back unless the directory moved aside is the one expected.
    """
    ordinary_modes(staged)
    _fsync_tree(staged)
    if expected is None:
        try:
            staged.rename(target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise TargetChanged(exc.errno, "it was created by something else meanwhile") from None
            raise
        _fsync(target.parent)
        return
    _swap(staged, target, expected)
    _fsync(target.parent)


def write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` through a temporary file beside it; a crash leaves the old file."""
    write_bytes(target, text.encode("utf-8"))


def write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file beside it; a crash leaves the old file."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes it private; the file is an ordinary one
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, target)
    finally:
        if os.path.exists(name):
            os.unlink(name)
    _fsync(target.parent)


def umask() -> int:
    """This process's umask, read without changing it where Linux tells it (``Umask:`` in /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_modes(root: Path) -> None:
    """Give ``root`` and everything in it (all written by peftkit) the modes a plain write gives under the umask:
    files 0666, folders 0777, less the umask. Temporary files and folders are made private (0600, 0700), and
    some libraries write through them; what peftkit hands over must not stay private."""
    mask = umask()
    for folder, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o777 & ~mask)
    os.chmod(root, 0o777 & ~mask)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync(root)


def _fsync(directory: Path) -> None:
    """Flush a directory entry to disk where the platform allows it."""
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
