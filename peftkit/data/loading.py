"""Recipe → train / validation / test examples: a catalogue data set, local files or a hub data set, split
deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from peftkit.config.paths import looks_like_path
from peftkit.data.cache import dataset_splits
from peftkit.data.catalog import DATASETS
from peftkit.data.formats import read_file
from peftkit.errors import PeftkitError, first_line

if TYPE_CHECKING:  # the recipe imports this package (preprocess, augment, the suffix table)
    from datasets import Dataset, DatasetDict

    from peftkit.config.sections import DataSection
    from peftkit.heads.base import Head

SPLITS = ("train", "validation", "test")


def load_source(data: DataSection) -> DatasetDict:
    """The data as its source gives it: one split, or the splits it has."""
    from datasets import Dataset, DatasetDict, load_dataset

    if data.files:
        return DatasetDict({split: read_file(path) for split, path in data.files.items()})
    if data.source in DATASETS:
        splits = dataset_splits(data.source)
        return DatasetDict({name: Dataset.from_list(records) for name, records in splits.items()})
    path = Path(data.source).expanduser()
    if path.exists() or looks_like_path(data.source):
        return DatasetDict({"train": read_file(path)})  # a local file, or one that says where it went
    try:
        loaded = load_dataset(data.source, data.hub_config)
    except Exception as exc:  # offline, unknown id, bad config: all become one line
        first = first_line(exc)
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
    from datasets import DatasetDict

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
    from datasets import DatasetDict

    source = load_source(data)
    standardized = DatasetDict({name: head.standardize(part, data, name) for name, part in source.items()})
    splits = split(standardized, data)
    head.check_training_labels(splits["train"], data, data.files.get("train", data.source))
    return splits, list(labels) or head.read_labels(splits["train"], head.label_field)


def own_validation_split(data: DataSection) -> bool | None:
    """Whether ``data`` has a validation split that is not the test split (which stands in for a missing one):
    carved from train (validation_size > 0), or the source's own (a `validation` file, a catalogue data set's, a
    hub data set's named in source_splits). None when a hub data set would have to be loaded to tell."""
    if data.validation_size > 0 or "validation" in data.files or "validation" in data.source_splits:
        return True
    if data.files:
        return False
    entry = DATASETS.get(data.source)
    if entry is not None:
        return "validation" in entry.splits
    if Path(data.source).expanduser().exists() or looks_like_path(data.source):
        return False  # one local file: train only
    return None
