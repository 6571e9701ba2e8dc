"""The one data path of a recipe: load → split → preprocess → augment the training split → tokenize.

Training, `peftkit eval`, the export's parity check, the memory estimate and the benchmark (its cells train and
estimate; its TF-IDF baseline reads the text) all build their examples here, so each sees the text in the form
the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict
from datasets.utils import tqdm as hf_tqdm
from transformers import PreTrainedTokenizerBase

from peftkit.config.sections import DataSection, Recipe
from peftkit.data import SPLITS, augment, load_splits, preprocess
from peftkit.data import tokenized as tokenized_cache
from peftkit.heads.base import TOKENIZING_SPLIT, Head, column_values, tokenizing_label


@dataclass
class RecipeData:
    """The standardized text splits (preprocessed; the training split augmented) and their tokenized form."""

    text: DatasetDict
    tokenized: DatasetDict
    label_names: list[str]
    #: (cache key, split name) of the splits tokenized afresh that the tokenized cache does not hold yet.
    uncached: list[tuple[str, str]] = field(default_factory=list)

    def keep_tokenized(self) -> None:
        """Put the splits tokenized afresh into the tokenized cache (``build_splits(..., keep=False)`` defers
        this to the caller, e.g. until the model has loaded, so that a refused command writes nothing)."""
        for key, name in self.uncached:
            tokenized_cache.store(key, self.tokenized[name])
        self.uncached = []

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


def build_splits(recipe: Recipe, head: Head, tokenizer: PreTrainedTokenizerBase | None,
                 parts: Sequence[str] = SPLITS, keep: bool = True) -> RecipeData:
    """The recipe's examples: its data loaded and split deterministically, its `preprocess` steps applied to
    every split, its `augment` copies added to the training split, then ``parts`` tokenized by ``head``
    (none, and no tokenizer needed, for ``parts=()``: a baseline that reads the text). With
    ``data.cache_tokenized`` a split tokenized before comes from the tokenized cache, and one tokenized afresh goes
    into it (``keep``) or waits for ``RecipeData.keep_tokenized``."""
    splits, label_names = load_splits(recipe.data, head, recipe.task.labels)
    steps = preprocess.resolved(recipe.preprocess)
    splits = preprocess.apply(splits, steps, skip=(head.label_field,))
    if recipe.augment.copies:
        column = augment.text_column(splits["train"], head.name)
        splits["train"] = augment.augment(splits["train"], recipe.augment, recipe.train.seed, column)
    label2id = {name: i for i, name in enumerate(label_names)}
    tokenized, uncached = DatasetDict(), []
    for name in parts:
        tokenized[name], key = _tokenize(head, splits[name], name, tokenizer, recipe.data, label2id)
        if key:
            uncached.append((key, name))
    data = RecipeData(splits, tokenized, label_names, uncached)
    if keep:
        data.keep_tokenized()
    return data


def _tokenize(head: Head, split: Dataset, name: str, tokenizer: PreTrainedTokenizerBase | None, data: DataSection,
              label2id: dict[str, int]) -> tuple[Dataset, str | None]:
    """``head.tokenize`` of one split, its progress bar labelled with the split's name, and the split's cache key
    when the tokenized cache should keep it. With ``data.cache_tokenized`` a split the cache holds comes from
    there, the bar saying so."""
    token = TOKENIZING_SPLIT.set(name)
    try:
        key = None
        if data.cache_tokenized and tokenizer is not None:
            key = tokenized_cache.key(head, split, tokenizer, data.max_length, label2id)
        cached = tokenized_cache.load(key) if key else None
        if cached is not None:
            with hf_tqdm(total=len(cached), desc=f"{tokenizing_label()} (cached)", unit=" examples") as bar:
                bar.update(len(cached))
            return cached, None
        return head.tokenize(split, tokenizer, data.max_length, label2id), key
    finally:
        TOKENIZING_SPLIT.reset(token)


def longest_input(tokenized: DatasetDict, splits: Sequence[str] | None = None) -> int:
    """Token count of the longest tokenized example of ``splits`` (every split by default)."""
    parts = [tokenized[name] for name in splits] if splits is not None else list(tokenized.values())
    return max(len(ids) for part in parts for ids in column_values(part, "input_ids"))


def padded_length(tokenized: DatasetDict, data: DataSection) -> int:
    """The padded length of the longest training batch under ``data.padding``: data.max_length, the longest
    training example (dynamic), or the longest example of the data set (longest_in_dataset)."""
    if data.padding == "max_length":
        return data.max_length
    return longest_input(tokenized, ["train"] if data.padding == "dynamic" else None)
