"""The one data path of a recipe: load → split → preprocess → augment the training split → tokenize.

Training, `peftkit eval`, the export's parity check, the memory estimate and the benchmark (its cells train and
estimate; its TF-IDF baseline reads the text) all build their examples here, so each sees the text in the form
the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from peftkit.config.sections import DataSection, Recipe
from peftkit.data import SPLITS, augment, load_splits, preprocess
from peftkit.heads.base import TOKENIZING_SPLIT, Head


@dataclass
class RecipeData:
    """The standardized text splits (preprocessed; the training split augmented) and their tokenized form."""

    text: DatasetDict
    tokenized: DatasetDict
    label_names: list[str]

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


def build_splits(recipe: Recipe, head: Head, tokenizer: PreTrainedTokenizerBase | None,
                 parts: Sequence[str] = SPLITS) -> RecipeData:
    """The recipe's examples: its data loaded and split deterministically, its `preprocess` steps applied to
    every split, its `augment` copies added to the training split, then ``parts`` tokenized by ``head``
    (none, and no tokenizer needed, for ``parts=()``: a baseline that reads the text)."""
    splits, label_names = load_splits(recipe.data, head, recipe.task.labels)
    steps = preprocess.resolved(recipe.preprocess)
    splits = preprocess.apply(splits, steps, skip=(head.label_field,))
    if recipe.augment.copies:
        column = augment.text_column(splits["train"], head.name)
        splits["train"] = augment.augment(splits["train"], recipe.augment, recipe.train.seed, column)
    label2id = {name: i for i, name in enumerate(label_names)}
    tokenized = DatasetDict({name: _tokenize(head, splits[name], name, tokenizer, recipe.data.max_length, label2id)
                             for name in parts})
    return RecipeData(splits, tokenized, label_names)


def _tokenize(head: Head, split: Dataset, name: str, tokenizer: PreTrainedTokenizerBase | None, max_length: int,
              label2id: dict[str, int]) -> Dataset:
    """``head.tokenize`` of one split, its progress bar labelled with the split's name."""
    token = TOKENIZING_SPLIT.set(name)
    try:
        return head.tokenize(split, tokenizer, max_length, label2id)
    finally:
        TOKENIZING_SPLIT.reset(token)


def longest_input(tokenized: DatasetDict, splits: Sequence[str] | None = None) -> int:
    """Token count of the longest tokenized example of ``splits`` (every split by default)."""
    parts = [tokenized[name] for name in splits] if splits is not None else list(tokenized.values())
    return max(len(ids) for part in parts for ids in part["input_ids"])


def padded_length(tokenized: DatasetDict, data: DataSection) -> int:
    """The padded length of the longest training batch under ``data.padding``: data.max_length, the longest
    training example (dynamic), or the longest example of the data set (longest_in_dataset)."""
    if data.padding == "max_length":
        return data.max_length
    return longest_input(tokenized, ["train"] if data.padding == "dynamic" else None)
