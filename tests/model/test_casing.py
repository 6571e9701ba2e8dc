"""`model.lowercase`: an uncased vocabulary behind a case-keeping tokenizer (m3e-small's kind) sees capitalised
words once the tokenizer lower-cases, in training, in the saved run and in plain transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import make_sentiment_rows, tiny_bpe_tokenizer, write_csv
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizer

import peftkit
from peftkit.config.sections import ModelSection
from peftkit.errors import PeftkitError
from peftkit.model.casing import apply_lowercase
from peftkit.model.loading import load_tokenizer
from peftkit.rundir.inference import predict


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_auto_lower_cases_where_the_vocabulary_has_no_capitals(case_keeping_bert: Path) -> None:
    assert AutoTokenizer.from_pretrained(case_keeping_bert).tokenize("GOOD") == ["[UNK]"]
    model = ModelSection(name=str(case_keeping_bert))
    tokenizer = load_tokenizer(model)
    assert model.lowercase is True
    assert _ids(tokenizer, "A WONDERFUL Film") == _ids(tokenizer, "a wonderful film")
    assert tokenizer.unk_token_id not in _ids(tokenizer, "A WONDERFUL Film")


def test_false_keeps_the_tokenizer_as_shipped(case_keeping_bert: Path) -> None:
    tokenizer = load_tokenizer(ModelSection(name=str(case_keeping_bert), lowercase=False))
    assert tokenizer.tokenize("GOOD") == ["[UNK]"]


def test_auto_leaves_a_cased_vocabulary_alone() -> None:
    words = ["good", "Good", "paris", "Paris", "film", "Film"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])},
                                  do_lower_case=False)
    model = ModelSection(name="cased")
    apply_lowercase(model, tokenizer)
    assert model.lowercase is False
    assert tokenizer.tokenize("Good good") == ["Good", "good"]


def test_true_adds_lower_casing_to_a_byte_level_tokenizer() -> None:
    """A normalizer other than BERT's (here none) gets a Lowercase step after it."""
    tokenizer = tiny_bpe_tokenizer()
    assert _ids(tokenizer, "Good film") != _ids(tokenizer, "good film")
    model = ModelSection(name="bpe", lowercase=True)
    apply_lowercase(model, tokenizer)
    assert _ids(tokenizer, "Good FILM") == _ids(tokenizer, "good film")


def test_a_lower_casing_tokenizer_resolves_auto_to_true(tiny_bert: Path) -> None:
    model = ModelSection(name=str(tiny_bert))
    load_tokenizer(model)
    assert model.lowercase is True


class _SlowTokenizer(PreTrainedTokenizer):
    """A slow (Python) tokenizer over a lower-case vocabulary: no normalizer to lower-case in."""

    def __init__(self, **kwargs: Any) -> None:
        self.vocab = {"[UNK]": 0, "good": 1}
        super().__init__(unk_token="[UNK]", **kwargs)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _tokenize(self, text: str) -> list[str]:
        return text.split()

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, 0)


def test_true_on_a_slow_tokenizer_is_refused_in_one_line() -> None:
    with pytest.raises(PeftkitError, match=r"^'model.lowercase': true needs a fast tokenizer; slow's is a slow one "
                                           r"\(_SlowTokenizer\); lower-case the text with preprocess.steps"):
        apply_lowercase(ModelSection(name="slow", lowercase=True), _SlowTokenizer())


def test_a_run_trains_on_capitals_and_saves_a_tokenizer_that_lower_cases(write_recipe, case_keeping_bert: Path,
                                                                          tmp_path: Path) -> None:
    """Upper-case text through the case-keeping tokenizer: every word would be [UNK] and the model at chance; with
    `auto` the tokenizer lower-cases, the run learns, records `model.lowercase: true`, and the tokenizer it saved
    lower-cases for plain transformers too."""
    data = write_csv(tmp_path / "upper.csv",
                     [{**r, "text": r["text"].upper()} for r in make_sentiment_rows(400)])
    result = peftkit.train(write_recipe({"model.name": str(case_keeping_bert), "data.source": str(data),
                                         "train.max_steps": 120}))
    assert result.metrics["test"]["accuracy"] >= 0.85, result.metrics["test"]
    saved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["model"]["lowercase"] is True
    plain = AutoTokenizer.from_pretrained(result.output_dir)
    assert plain.unk_token_id not in _ids(plain, "A WONDERFUL FILM")
    assert predict(result.output_dir, ["A WONDERFUL FILM"])[0]["label"] == "positive"
