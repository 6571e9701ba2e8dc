"""Text preprocessing as named steps: ``datasets.map`` over the splits at training time, raw texts at predict time."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from peftkit.config.sections import PreprocessSection
from peftkit.config.validation import check_preprocess
from peftkit.errors import PeftkitError

#: Steps that change how many words a text has; they cannot run on pre-split words (token classification).
WORD_COUNT_STEPS = ("remove_stopwords", "segment_zh")

_STOPWORDS_TEXT = (
    "a an the and or but of to in on at for with by from as is are was were be been being it its this that these "
    "those i you he she we they me him her us them my your his our their am do does did so than too very can will "
    "just 的 了 是 在 和 也 就 都 而 及 与 着 或 一个 没有 我们 你们 他们 这 那 之 吧 吗 呢 啊 把 被 让 给"
)
#: A small built-in stop-word list (English and Chinese); `preprocess.stopwords` replaces it.
BUILTIN_STOPWORDS = tuple(_STOPWORDS_TEXT.split())
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]+>", re.IGNORECASE | re.DOTALL)
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_SPACES = re.compile(r"\s+")
_FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_TRAILING_PUNCT = ".,;:!?)]}\"'"


def resolved(section: PreprocessSection) -> PreprocessSection:
    """A copy whose stop words are listed inline (read from their file), so a saved run needs no other file."""
    if not isinstance(section.stopwords, str):
        return section.model_copy()
    path = Path(section.stopwords)
    try:
        words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise PeftkitError(f"'preprocess.stopwords': file '{path}' is not UTF-8 text") from None
    return section.model_copy(update={"stopwords": words})


class Preprocessor:
    """The recipe's steps as one ``str -> str`` function (picklable, so ``datasets`` can fingerprint it)."""

    def __init__(self, section: PreprocessSection) -> None:
        check_preprocess(section, "preprocess")
        section = resolved(section)
        self.section = section
        words = BUILTIN_STOPWORDS if section.stopwords is None else section.stopwords
        self.stopwords = frozenset(w.lower() for w in words)
        self.steps: list[Callable[[str], str]] = [getattr(self, name) for name in section.steps]

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, text: str) -> str:
        for step in self.steps:
            text = step(text)
        return text

    def strip_html(self, text: str) -> str:
        return _SPACES.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()

    def nfkc(self, text: str) -> str:
        return unicodedata.normalize("NFKC", text)

    def fullwidth_to_halfwidth(self, text: str) -> str:
        return text.translate(_FULLWIDTH)

    def lowercase(self, text: str) -> str:
        return text.lower()

    def mask_urls(self, text: str) -> str:
        return _URL.sub(lambda m: self.section.url_token + _trailing(m.group()), text)

    def mask_emails(self, text: str) -> str:
        return _EMAIL.sub(self.section.email_token, text)

    def remove_stopwords(self, text: str) -> str:
        kept = [w for w in text.split() if w.lower().strip(_TRAILING_PUNCT) not in self.stopwords]
        return " ".join(kept)

    def segment_zh(self, text: str) -> str:
        import jieba

        return " ".join(w for w in jieba.lcut(text) if w.strip())


def _trailing(url: str) -> str:
    """Sentence punctuation a URL match swallowed, given back after the mask."""
    return url[len(url.rstrip(_TRAILING_PUNCT)):]


def apply(splits: DatasetDict, section: PreprocessSection, skip: tuple[str, ...] = ()) -> DatasetDict:
    """Every text column of every split through the steps (``datasets.map``); ``skip``: columns left alone.

    Word-list columns (token classification) are cleaned word by word; steps that add or drop words
    are refused there, since each word carries a tag.
    """
    process = Preprocessor(section)
    if not process:
        return splits
    return DatasetDict({name: _map(part, process, skip, name) for name, part in splits.items()})


def _map(dataset: Dataset, process: Preprocessor, skip: tuple[str, ...], split: str) -> Dataset:
    text_columns = [c for c in dataset.column_names if c not in skip and _kind(dataset, c) == "text"]
    word_columns = [c for c in dataset.column_names if c not in skip and _kind(dataset, c) == "words"]
    if word_columns:
        bad = [s for s in process.section.steps if s in WORD_COUNT_STEPS]
        if bad:
            raise PeftkitError(
                f"'preprocess.steps': {bad[0]} adds or drops words, which would misalign the per-word tags of "
                f"column '{word_columns[0]}'; drop it for this task"
            )

    def clean(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out = {c: [process(t) for t in batch[c]] for c in text_columns}
        out.update({c: [[process(w) for w in words] for words in batch[c]] for c in word_columns})
        return out

    return dataset.map(clean, batched=True, desc=f"preprocessing {split}")


def _kind(dataset: Dataset, column: str) -> str:
    feature = dataset.features[column]
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        return "text"
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return "words" if getattr(inner, "dtype", None) in ("string", "large_string") else "other"


def apply_texts(section: PreprocessSection, texts: list[str]) -> list[str]:
    """Raw texts (predict time) through the same steps the run was trained with."""
    process = Preprocessor(section)
    return [process(t) for t in texts] if process else list(texts)
