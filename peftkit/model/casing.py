"""`model.lowercase`: lower-casing in the tokenizer's own normalizer, for a vocabulary that has no capitals.

m3e-small ships bert-base-chinese's uncased vocabulary with a normalizer that keeps case, so "OK", "IBM" and
"T400" each become [UNK] (about a sixth of the catalogue's Chinese reviews and headlines hold one). Lower-casing
goes into the normalizer rather than the data, so the tokenizer a run saves, and every export of it, does the same.
BERT's normalizer then also strips accents unless told otherwise, as uncased BERT's own does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tokenizers import normalizers
from transformers import PreTrainedTokenizerBase

from peftkit.config.sections import AUTO, ModelSection
from peftkit.errors import PeftkitError

_UPPER, _LOWER, _LETTER = re.compile("[A-Z]"), re.compile("[a-z]"), re.compile("[A-Za-z]")
#: A vocabulary is cased when at least this share of its Latin-letter tokens holds a capital; m3e-small's has 2
#: (`<S>`, `<T>`) of 3,792, SmolLM2's 13,928 of 40,000.
CASED_SHARE = 0.01


def lowercases(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer lower-cases text before its vocabulary lookup (a slow tokenizer: its own flag)."""
    if not tokenizer.is_fast:
        return bool(getattr(tokenizer, "do_lower_case", False))
    return _lowercases(_normalizer_state(tokenizer))


def _normalizer_state(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any] | None:
    """The fast tokenizer's normalizer as its JSON state (that part alone, not the whole tokenizer), None if none."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    return None if normalizer is None else json.loads(normalizer.__getstate__())


def _lowercases(normalizer: dict[str, Any] | None) -> bool:
    if not normalizer:
        return False
    if normalizer["type"] == "Sequence":
        return any(_lowercases(n) for n in normalizer["normalizers"])
    return normalizer["type"] == "Lowercase" or (normalizer["type"] == "BertNormalizer" and normalizer["lowercase"])


def uncased_vocabulary(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the vocabulary's Latin-letter tokens are (all but a few special ones) lower case."""
    special = set(tokenizer.all_special_tokens)
    lettered = [t for t in tokenizer.get_vocab() if t not in special and _LETTER.search(t)]
    upper = sum(1 for t in lettered if _UPPER.search(t))
    return any(_LOWER.search(t) for t in lettered) and upper < CASED_SHARE * len(lettered)


def apply_lowercase(model: ModelSection, tokenizer: PreTrainedTokenizerBase) -> None:
    """Resolve `model.lowercase: auto` in place (on where the tokenizer lower-cases already or its vocabulary is
    uncased) and, where it is on, make the tokenizer's normalizer lower-case text if it does not."""
    already = lowercases(tokenizer)
    if model.lowercase == AUTO:
        model.lowercase = already or uncased_vocabulary(tokenizer)
    if not model.lowercase or already:
        return
    if not tokenizer.is_fast:
        raise PeftkitError(f"'model.lowercase': true needs a fast tokenizer; {model.name}'s is a slow one "
                           f"({type(tokenizer).__name__}); lower-case the text with preprocess.steps: [lowercase]")
    backend, state = tokenizer.backend_tokenizer, _normalizer_state(tokenizer)
    if state and state["type"] == "BertNormalizer":
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=state["clean_text"], handle_chinese_chars=state["handle_chinese_chars"],
            strip_accents=state["strip_accents"], lowercase=True,
        )
    else:
        backend.normalizer = normalizers.Sequence([*([backend.normalizer] if state else []), normalizers.Lowercase()])
    # tokenizer_config.json records the flag (from the attribute where the class has one, else from init_kwargs),
    # and BERT's class rebuilds its normalizer from it when it loads
    if "do_lower_case" in tokenizer.init_kwargs:
        tokenizer.init_kwargs["do_lower_case"] = True
    if hasattr(tokenizer, "do_lower_case"):
        tokenizer.do_lower_case = True
