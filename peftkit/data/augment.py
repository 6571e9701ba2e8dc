"""EDA-style augmentation of the training split: synonym replacement, random insertion / swap / deletion.

Each operation is a registered ``augmenter(text, ctx) -> text``; third parties add their own (a
back-translation model, say) through the ``peftkit.augmenters`` entry point group and name it in
``augment.ops``. Texts without spaces that hold Chinese characters are edited character by character;
words that the synonym file lists are matched as substrings there.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from peftkit.config.sections import AugmentSection
from peftkit.config.validation import check_augment
from peftkit.errors import PeftkitError
from peftkit.registry import AUGMENTERS

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_GROUP_SEPARATORS = re.compile(r"[\s,，、;；]+")


@dataclass
class AugmentContext:
    """What an augmenter may use: a seeded random generator, the change share and the synonym groups."""

    rng: random.Random
    prob: float
    synonyms: dict[str, list[str]] = field(default_factory=dict)

    def count(self, units: int) -> int:
        """How many units one operation changes: prob × units, at least one."""
        return max(1, round(self.prob * units))


Augmenter = Callable[[str, AugmentContext], str]


def read_synonyms(path: str | Path | None) -> dict[str, list[str]]:
    """word (lower-cased) → the other words of its groups."""
    if not path:
        return {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PeftkitError(f"'augment.synonyms': file '{path}' is not UTF-8 text") from None
    table: dict[str, list[str]] = {}
    for line in lines:
        group = [w for w in _GROUP_SEPARATORS.split(line.strip()) if w]
        for word in group:
            others = table.setdefault(word.lower(), [])
            others.extend(w for w in group if w.lower() != word.lower() and w not in others)
    return table


def _units(text: str) -> tuple[list[str], str]:
    """Words and the joiner that puts them back; characters for unsegmented Chinese."""
    if not re.search(r"\s", text.strip()) and _CJK.search(text):
        return list(text), ""
    return text.split(), " "


def _synonym_matches(text: str, synonyms: dict[str, list[str]]) -> list[re.Match[str]]:
    if not synonyms:
        return []
    keys = "|".join(re.escape(k) for k in sorted(synonyms, key=len, reverse=True))
    pattern = f"({keys})" if _units(text)[1] == "" else rf"(?<!\w)({keys})(?!\w)"
    return list(re.finditer(pattern, text, flags=re.IGNORECASE))


def synonym(text: str, ctx: AugmentContext) -> str:
    """Replace up to prob × words words that have synonyms with a random synonym each (EDA's SR)."""
    matches = _synonym_matches(text, ctx.synonyms)
    if not matches:
        return text
    picked = ctx.rng.sample(matches, min(len(matches), ctx.count(len(_units(text)[0]))))
    chosen = sorted(picked, key=lambda m: m.start())
    pieces, last = [], 0
    for match in chosen:
        pieces += [text[last:match.start()], ctx.rng.choice(ctx.synonyms[match.group().lower()])]
        last = match.end()
    return "".join([*pieces, text[last:]])


def insert(text: str, ctx: AugmentContext) -> str:
    """Insert prob × words words at random places: synonyms of words in the text (EDA's RI), else copies."""
    units, joiner = _units(text)
    candidates = [s for m in _synonym_matches(text, ctx.synonyms) for s in ctx.synonyms[m.group().lower()]]
    for _ in range(ctx.count(len(units))):
        units.insert(ctx.rng.randrange(len(units) + 1), ctx.rng.choice(candidates or units))
    return joiner.join(units)


def swap(text: str, ctx: AugmentContext) -> str:
    """Swap two random words, prob × words times (EDA's RS)."""
    units, joiner = _units(text)
    if len(units) < 2:
        return text
    for _ in range(ctx.count(len(units))):
        i, j = ctx.rng.sample(range(len(units)), 2)
        units[i], units[j] = units[j], units[i]
    return joiner.join(units)


def delete(text: str, ctx: AugmentContext) -> str:
    """Drop each word with probability prob, keeping at least one (EDA's RD)."""
    units, joiner = _units(text)
    if len(units) < 2:
        return text
    kept = [u for u in units if ctx.rng.random() >= ctx.prob]
    return joiner.join(kept or [ctx.rng.choice(units)])


for _name, _op in (("synonym", synonym), ("insert", insert), ("swap", swap), ("delete", delete)):
    AUGMENTERS.register(_name)(_op)


def text_column(dataset: Dataset, head_name: str) -> str:
    """The column augmentation edits: `text`, or a causal LM's `prompt`; other layouts are refused."""
    for column in ("text", "prompt"):
        if column in dataset.column_names:
            return column
    raise PeftkitError(
        f"'augment': task.head '{head_name}' has no free-text column to augment (word lists carry one tag per "
        "word); set augment.copies: 0"
    )


def augment(dataset: Dataset, section: AugmentSection, seed: int, column: str) -> Dataset:
    """The rows plus ``copies`` augmented copies of each (other columns, e.g. the label, copied as they are).

    Row ``i`` draws from its own generator seeded with (seed, i): the same recipe gives the same rows.
    """
    if section.copies == 0:
        return dataset
    check_augment(section, "recipe")
    synonyms = read_synonyms(section.synonyms)
    names = [n for n in section.ops if synonyms or n != "synonym"]  # without a word list it would copy rows
    if not names:
        raise PeftkitError("'augment.ops': synonym alone needs augment.synonyms (a word list file)")
    ops: list[Augmenter] = [AUGMENTERS.get(name) for name in names]

    def expand(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out = {name: list(values) for name, values in batch.items()}
        for position, index in enumerate(indices):
            ctx = AugmentContext(random.Random(f"{seed}:{index}"), section.prob, synonyms)
            for _ in range(section.copies):
                text = ctx.rng.choice(ops)(batch[column][position], ctx)
                for name, values in batch.items():
                    out[name].append(text if name == column else values[position])
        return out

    return dataset.map(expand, batched=True, with_indices=True, desc="augmenting train")
