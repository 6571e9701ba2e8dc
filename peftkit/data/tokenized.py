"""Tokenized splits kept in ``<cache>/tokenized/<key>/``, so that a second run of the same data does not tokenize
again.

The key is a sha256 over everything that decides a tokenized split: its rows (the Arrow data after preprocess and
augment), the tokenizer's serialized state, ``max_length``, the label order, the head (its class, config and the
source of its modules), and the versions of peftkit and the libraries that tokenize and store. An entry holds one
Arrow stream (``data.arrow``) and a record of its key, row count, columns, size and sha256; it is written into a
marked work folder and renamed into place in one step, so there is never a half entry. Reading it back trusts
nothing: an entry that is not a plain folder, a record of the wrong shape or key, a link, a file whose size or
sha256 differ, Arrow that does not parse or has other rows or columns is a miss; the split is tokenized as usual and
the entry replaced. Writing is best effort (a read-only or full cache only costs the next run its tokenizing).
At most ``MAX_ENTRIES`` entries and ``MAX_BYTES`` are kept, the oldest written going first.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import secrets
import shutil
import stat
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftkit import markers
from peftkit.data.cache import cache_root

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from peftkit.heads.base import Head

FORMAT = 1
DATA = "data.arrow"
RECORD = ".peftkit-tokenized.json"
MARKER = ".peftkit-writing"
MAX_ENTRIES = 64
MAX_BYTES = 4 * 2**30
_KEY = re.compile(r"[0-9a-f]{64}")
#: A tokenizer's init settings that do not decide its output here: where its files were, and the truncation and
#: padding a saved copy remembers from its last call (each call of a head passes its own).
_CALL_SETTINGS = ("name_or_path", "tokenizer_file", "vocab_file", "merges_file", "max_length", "stride",
                  "truncation_strategy", "truncation_side", "padding_side", "pad_to_multiple_of", "padding_strategy")


def root() -> Path:
    """Where tokenized splits are kept: ``<cache_root()>/tokenized``."""
    return cache_root() / "tokenized"


class _Sha256Sink:
    """A write-only file that hashes what is written (and writes it on to ``out`` when given)."""

    def __init__(self, out: Any = None) -> None:
        self.digest, self.out, self.size, self.closed = hashlib.sha256(), out, 0, False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += view.nbytes
        if self.out is not None:
            self.out.write(view)
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _write_arrow(dataset: Dataset, sink: _Sha256Sink) -> None:
    """``dataset``'s rows (its indices applied) as one Arrow stream into ``sink``."""
    import pyarrow as pa

    table = dataset.with_format("arrow")[:]
    with pa.PythonFile(sink, mode="w") as out, pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)


def _tokenizer_state(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any] | None:
    """What decides a fast tokenizer's output, None for a slow one (not cached). Truncation and padding are left
    out (every call sets them from its own arguments), and so are file paths: a run's saved copy of a tokenizer
    keys as the tokenizer it was saved from."""
    if not tokenizer.is_fast:
        return None
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    backend.pop("truncation", None)
    backend.pop("padding", None)
    settings = {k: v for k, v in tokenizer.init_kwargs.items() if k not in _CALL_SETTINGS}
    return {
        "class": type(tokenizer).__name__, "backend": backend, "settings": settings,
        "special": tokenizer.special_tokens_map, "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side, "model_max_length": tokenizer.model_max_length,
        "chat_template": tokenizer.chat_template,
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _head_code(head: Head) -> list[tuple[str, str]]:
    """(class, sha256 of its module's source) for the head's class and every class it inherits from."""
    found = []
    for cls in type(head).__mro__[:-1]:  # not `object`
        try:
            source = hashlib.sha256(Path(inspect.getfile(cls)).read_bytes()).hexdigest()
        except (OSError, TypeError):
            source = ""
        found.append((f"{cls.__module__}.{cls.__qualname__}", source))
    return found


def key(head: Head, split: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
        label2id: dict[str, int]) -> str | None:
    """The cache key of ``split`` tokenized by ``head``, None when it cannot be keyed (a slow tokenizer)."""
    try:
        state = _tokenizer_state(tokenizer)
    except (AttributeError, TypeError, ValueError):  # a tokenizer without a serializable backend
        state = None
    if state is None:
        return None
    rows = _Sha256Sink()
    _write_arrow(split, rows)
    return _hash(_described(head, rows.digest.hexdigest(), state, max_length, label2id))


def _hash(described: dict[str, Any]) -> str:
    text = json.dumps(described, sort_keys=True, default=repr, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


#: Head options that shape the model, not the tokens, and are resolved after tokenizing (`task.pooling: auto`
#: becomes the model's own): left out of the key, so a run's saved value keys as the `auto` its training tokenized.
MODEL_ONLY_OPTIONS = {"pooling"}


def _described(head: Head, rows: str, state: dict[str, Any], max_length: int,
               label2id: dict[str, int]) -> dict[str, Any]:
    """Everything the key is a hash of."""
    return {
        "format": FORMAT, "rows": rows, "tokenizer": state, "max_length": max_length,
        "label2id": list(label2id.items()), "head": head.name,
        "config": head.config.model_dump(mode="json", exclude=MODEL_ONLY_OPTIONS),
        "code": _head_code(head), "tokenize_version": getattr(head, "tokenize_version", None),
        "versions": [_version(name) for name in ("peftkit", "transformers", "tokenizers", "datasets", "pyarrow")],
    }


def _read_record(entry: Path, expected_key: str) -> dict[str, Any] | None:
    """The entry's record when it is one this module wrote for ``expected_key``, else None."""
    try:
        fd = os.open(entry / RECORD, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            record = json.loads(handle.read(1 << 16))
    except (OSError, ValueError):
        return None
    shape = {"format": int, "key": str, "rows": int, "columns": list, "size": int, "sha256": str}
    if not (isinstance(record, dict) and set(record) == set(shape)
            and all(type(record[k]) is t for k, t in shape.items())):
        return None
    if record["format"] != FORMAT or record["key"] != expected_key or record["rows"] < 0 or record["size"] < 0 \
            or not _KEY.fullmatch(record["sha256"]) or not all(isinstance(c, str) for c in record["columns"]):
        return None
    return record


def _verified(entry: Path, cache_key: str) -> tuple[dict[str, Any], bytes] | None:
    """(record, Arrow bytes) of the entry when it is a plain folder holding just the record for ``cache_key`` and
    the Arrow file it describes (its size and sha256), else None."""
    try:
        if not stat.S_ISDIR(os.lstat(entry).st_mode) or sorted(os.listdir(entry)) != sorted([DATA, RECORD]):
            return None
    except OSError:
        return None
    record = _read_record(entry, cache_key)
    if record is None:
        return None
    try:
        fd = os.open(entry / DATA, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size != record["size"]:
                return None
            data = handle.read(record["size"] + 1)
    except OSError:
        return None
    if len(data) != record["size"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None
    return record, data


def load(cache_key: str) -> Dataset | None:
    """The tokenized split cached under ``cache_key``, or None when there is none or it is not as recorded."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    found = _verified(root() / cache_key, cache_key)
    if found is None:
        return None
    record, data = found
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        dataset = Dataset(InMemoryTable(table))
    except Exception:  # any Arrow or datasets error: the entry is not usable, tokenize again
        return None
    if len(dataset) != record["rows"] or dataset.column_names != record["columns"]:
        return None
    return dataset


def store(cache_key: str, dataset: Dataset) -> None:
    """Keep ``dataset`` under ``cache_key`` (replacing an entry that ``load`` refused); best effort: a cache that
    cannot be written is left as it is. Then the oldest entries go beyond the bounds."""
    base = root()
    try:
        base.mkdir(parents=True, exist_ok=True)
        markers.remove_abandoned(base.glob(".tmp-*"), MARKER)
        work = base / f".tmp-{secrets.token_hex(8)}"
        work.mkdir()
    except OSError:
        return
    handle = None
    try:
        handle = markers.claim(work, MARKER)
        entry = work / "entry"
        entry.mkdir()
        with open(entry / DATA, "xb") as out:
            sink = _Sha256Sink(out)
            _write_arrow(dataset, sink)
        record = {"format": FORMAT, "key": cache_key, "rows": len(dataset), "columns": dataset.column_names,
                  "size": sink.size, "sha256": sink.digest.hexdigest()}
        (entry / RECORD).write_text(json.dumps(record), encoding="utf-8")
        _place(entry, base / cache_key, cache_key, work)
    except OSError:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if handle is not None:
            handle.close()
    evict(keep=cache_key)


def _place(entry: Path, final: Path, cache_key: str, work: Path) -> None:
    """Rename ``entry`` to ``final``; an entry another process placed first is kept, a broken one replaced."""
    try:
        os.rename(entry, final)
        return
    except OSError:
        if _verified(final, cache_key) is not None:
            return  # a concurrent writer was first
    _discard(final, work)
    os.rename(entry, final)


def _discard(final: Path, work: Path) -> None:
    """Take the broken entry at ``final`` out of the way: a link or file is unlinked (never followed), a folder
    renamed into ``work`` (removed with it)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(final).st_mode):
            os.rename(final, work / "broken")
        else:
            final.unlink()


def _entries() -> list[tuple[float, int, Path]]:
    """(written at, size, folder) of every entry with a valid record, oldest first."""
    found = []
    try:
        names = os.listdir(root())
    except OSError:
        return []
    for name in names:
        entry = root() / name
        try:
            if not _KEY.fullmatch(name) or not stat.S_ISDIR(os.lstat(entry).st_mode):
                continue
            record = _read_record(entry, name)
            if record is not None:
                found.append((os.lstat(entry / RECORD).st_mtime, record["size"], entry))
        except OSError:
            continue
    return sorted(found)


def evict(keep: str = "", max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> list[Path]:
    """Remove the oldest entries (only folders holding this module's record) until at most ``max_entries`` and
    ``max_bytes`` remain; ``keep`` (the key just written) stays. Returns the removed folders."""
    entries = _entries()
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, entry in entries:
        if len(entries) - len(removed) <= max_entries and total <= max_bytes:
            break
        if entry.name == keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        total -= size
    return removed
