"""Recipe → train / validation / test examples: catalogue, local files or hub, split deterministically."""

from __future__ import annotations

import tempfile
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from peftkit import catalog
from peftkit.conll import CONLL_SUFFIXES, read_conll
from peftkit.errors import PeftkitError
from peftkit.heads.base import Head
from peftkit.recipe import DataSection

#: File suffix → `datasets` builder name.
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")
LOCAL_SUFFIXES = {*FILE_FORMATS, *CONLL_SUFFIXES, ".txt"}


def read_file(path: str | Path) -> Dataset:
    """One local file as a Dataset; the format comes from the suffix."""
    path = Path(path)
    if path.is_dir():
        raise PeftkitError(f"data file '{path}' is a directory; name a data file inside it")
    if path.exists() and not path.is_file():
        raise PeftkitError(f"data file '{path}' is not a regular file (a FIFO or device)")
    if path.suffix.lower() in CONLL_SUFFIXES and path.is_file():
        return read_conll(path)
    builder = FILE_FORMATS.get(path.suffix.lower())
    if builder is None:
        raise PeftkitError(
            f"data file '{path}': unsupported format '{path.suffix}' (expected one of {', '.join(FILE_FORMATS)})"
        )
    if not path.is_file():
        raise PeftkitError(f"data file '{path}' does not exist")
    kwargs: dict = {}
    if builder == "csv":  # only empty cells are missing: "NA", "null" or "None" are text
        kwargs.update(keep_default_na=False, na_values=[""])
    if path.suffix.lower() == ".tsv":
        kwargs["delimiter"] = "\t"
    try:
        with tempfile.TemporaryDirectory(prefix="peftkit-data-") as cache:  # read into memory, cache nothing
            loaded = load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                  keep_in_memory=True, **kwargs)
    except UnicodeDecodeError as exc:
        raise PeftkitError(f"data file '{path}': not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:  # datasets wraps parser errors in many types; the message is what matters
        cause = exc.__cause__ or exc
        if isinstance(cause, UnicodeDecodeError):
            raise PeftkitError(f"data file '{path}': not UTF-8 text ({cause.reason})") from None
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise PeftkitError(f"data file '{path}': could not be read as {builder} ({first})") from None
    if len(loaded) == 0:
        raise PeftkitError(f"data file '{path}' holds no rows")
    return loaded


def load_source(data: DataSection) -> DatasetDict:
    """The data as its source gives it: one split, or the splits it has."""
    if data.files:
        return DatasetDict({split: read_file(path) for split, path in data.files.items()})
    if data.source in catalog.DATASETS:
        splits = catalog.load_splits(data.source)
        return DatasetDict({name: Dataset.from_list(records) for name, records in splits.items()})
    path = Path(data.source).expanduser()
    if path.exists() or data.source.startswith((".", "/", "~")) or path.suffix.lower() in LOCAL_SUFFIXES:
        return DatasetDict({"train": read_file(path)})  # a local file, or one that says where it went
    try:
        loaded = load_dataset(data.source, data.hub_config)
    except Exception as exc:  # offline, unknown id, bad config: all become one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PeftkitError(
            f"data.source '{data.source}': not a catalogue data set (`peftkit data ls`), a local file, "
            f"or a hub data set that could be loaded: {first}"
        ) from None
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    roles = {"train": "train", **(data.source_splits or {k: k for k in loaded if k in SPLITS})}
    for role, name in roles.items():
        if name not in loaded:
            key = f"data.source_splits.{role}" if role in data.source_splits else "data.source"
            raise PeftkitError(f"'{key}': hub data set '{data.source}' has no '{name}' split "
                               f"(has {', '.join(loaded)})")
    return DatasetDict({role: loaded[name] for role, name in roles.items()})


def _size(value: float, total: int) -> int:
    return round(value * total) if value < 1 else int(value)


def _hold_out(train: Dataset, value: float, key: str, seed: int) -> DatasetDict:
    """Carve ``value`` rows (a share below 1, else a count) out of ``train``, leaving at least one on each side."""
    n = _size(value, len(train))
    if not 0 < n < len(train):
        raise PeftkitError(
            f"'data.{key}': {value} means {n} of {len(train)} training rows; hold out at least 1 and leave at least 1 "
            f"(a share below 1, or a count from 1 to {len(train) - 1})"
        )
    return train.train_test_split(test_size=n, seed=seed)


def split(source: DatasetDict, data: DataSection) -> DatasetDict:
    """Train / validation / test: the source's own splits, the rest carved from train with split_seed."""
    train = source["train"]
    test = source.get("test")
    if test is None:
        parts = _hold_out(train, data.test_size, "test_size", data.split_seed)
        train, test = parts["train"], parts["test"]
    validation = source.get("validation")
    if validation is None:
        if _size(data.validation_size, len(train)) > 0:
            parts = _hold_out(train, data.validation_size, "validation_size", data.split_seed)
            train, validation = parts["train"], parts["test"]
        else:
            validation = test
    result = DatasetDict({"train": train, "validation": validation, "test": test})
    if data.max_train_samples:
        result["train"] = _first(result["train"].shuffle(seed=data.split_seed), data.max_train_samples)
    if data.max_eval_samples:
        for name in ("validation", "test"):
            result[name] = _first(result[name], data.max_eval_samples)
    for name, part in result.items():
        if len(part) == 0:
            raise PeftkitError(f"data: the {name} split is empty (data.test_size / data.validation_size too small?)")
    return result


def _first(dataset: Dataset, n: int) -> Dataset:
    return dataset.select(range(min(n, len(dataset))))


def load_splits(data: DataSection, head: Head, labels: list[str]) -> tuple[DatasetDict, list[str]]:
    """Standardized train / validation / test splits and the label names in id order."""
    source = load_source(data)
    standardized = DatasetDict({name: head.standardize(part, data, name) for name, part in source.items()})
    splits = split(standardized, data)
    label_names = list(labels) or head.read_labels(splits["train"], head.label_field)
    if len(label_names) < 2 and head.kind == "sequence_classification":
        raise PeftkitError(f"data: the training split has only {len(label_names)} label(s); need at least 2")
    return splits, label_names
