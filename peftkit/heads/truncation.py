"""`task.truncate`: which part of a text longer than `data.max_length` a classification head cuts.

``end`` is transformers' own truncation (the start is kept). ``start`` keeps the end, where a review often gives
its verdict. ``middle`` keeps both ends: the first quarter and the last three quarters of the token budget, the
split Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?") found best for long reviews.
:func:`truncated_inputs` is untyped and self-contained (a tokenizer is all it needs): model cards print its source
so that a run or an export is fed as it was trained without peftkit.
"""

from __future__ import annotations

from typing import Literal

#: The values of `task.truncate`, transformers' own first.
Cut = Literal["end", "start", "middle"]


def truncated_inputs(tokenizer, texts, max_length, cut="end"):
    """Model inputs (a dict of lists) for ``texts``, each at most ``max_length`` tokens with its special tokens
    kept; ``cut`` is the part of a longer text that goes: ``end``, ``start`` or ``middle`` (a quarter of the
    budget kept from the start, the rest from the end)."""
    if cut == "end":
        return dict(tokenizer(texts, truncation=True, max_length=max_length))
    full = dict(tokenizer(texts, return_special_tokens_mask=True, verbose=False))
    special_masks = full.pop("special_tokens_mask")
    kept = {name: [] for name in full}
    for row, special in enumerate(special_masks):
        content = [i for i, is_special in enumerate(special) if not is_special]
        budget = max(max_length - (len(special) - len(content)), 0)
        head = budget // 4 if cut == "middle" else 0
        dropped = set(content[head:len(content) - (budget - head)]) if len(content) > budget else set()
        positions = [i for i in range(len(special)) if i not in dropped]
        for name, values in full.items():
            kept[name].append([values[row][i] for i in positions])
    return kept
