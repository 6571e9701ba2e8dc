"""ner head: label alignment, seqeval metrics, CoNLL files, bad rows, training, reload, predict with spans."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset
from testkit import train_and_reload, write_ner_conll

from peftkit.config.sections import DataSection, ModelSection
from peftkit.data import load_splits
from peftkit.errors import PeftkitError
from peftkit.heads.ner import IGNORE, NerConfig, NerHead, align_labels, entities, entity_metrics, split_words
from peftkit.model.loading import load_tokenizer
from peftkit.rundir.inference import predict
from peftkit.rundir.load import load_run


def test_alignment_first_subtoken_specials_and_long_words() -> None:
    tokenizer = load_tokenizer(ModelSection(name="minilm-l6"))
    words = ["unbelievably", "Washington", "北", "x"]
    encoded = tokenizer(words, is_split_into_words=True)
    word_ids = encoded.word_ids()
    labels = align_labels(word_ids, [1, 2, 3, 4])
    assert word_ids.count(0) >= 3  # one word split into many sub-tokens
    assert labels[0] == IGNORE and labels[-1] == IGNORE  # [CLS], [SEP]
    assert [lab for lab in labels if lab != IGNORE] == [1, 2, 3, 4]  # exactly one labelled sub-token per word
    assert labels[word_ids.index(0)] == 1 and labels[word_ids.index(0) + 1] == IGNORE


def test_alignment_byte_level_chinese_characters() -> None:
    tokenizer = load_tokenizer(ModelSection(name="smollm2-135m"))
    head = NerHead(NerConfig())
    data = Dataset.from_dict({"tokens": [list("张三在北京")], "tags": [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]})
    label2id = {"O": 0, "B-LOC": 1, "I-LOC": 2, "B-PER": 3, "I-PER": 4}
    row = head.tokenize(data, tokenizer, 32, label2id)[0]
    assert len(row["input_ids"]) > 5  # several byte-level tokens per character
    assert [lab for lab in row["labels"] if lab != IGNORE] == [3, 4, 0, 1, 2]


def test_seqeval_metrics_on_hand_checked_example() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-LOC"]]
    # gold entities: PER(0-1), LOC(3), ORG(0-1); predicted: PER(0-1) right, ORG(0) wrong span, LOC(2) wrong
    metrics = entity_metrics(gold, pred)
    assert metrics["precision"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(1 / 3)
    assert metrics["token_accuracy"] == pytest.approx(4 / 7)  # 3 of 4 tags right in row 1, 1 of 3 in row 2
    assert metrics["per_type"]["PER"]["f1"] == 1.0 and metrics["per_type"]["LOC"]["support"] == 1


def test_entities_have_character_spans() -> None:
    text = "Alice flew to New York."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Alice", "flew", "to", "New", "York", "."]
    found = entities(words, ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"], text)
    assert [(e["type"], e["start"], e["end"], e["text"]) for e in found] == [("PER", 0, 5, "Alice"),
                                                                           ("LOC", 14, 22, "New York")]
    zh = "张三在北京"
    found = entities(split_words(zh, "chars"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], zh)
    assert [(e["text"], e["start"], e["end"]) for e in found] == [("张三", 0, 2), ("北京", 3, 5)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("a O\nb B-PER\n\nc\n", "line 4: expected 'word TAG'"),
        ("a O\nb PERSON\n", "row 1: tag 'PERSON' of word 2 is not a BIO tag"),
    ],
)
def test_bad_conll_lines(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.conll"
    path.write_text(content * 10, encoding="utf-8")
    with pytest.raises(PeftkitError, match=expected):
        load_splits(DataSection(source=str(path), test_size=2, validation_size=2), NerHead(NerConfig()), [])


def test_bad_rows_name_the_row(tmp_path: Path) -> None:
    head = NerHead(NerConfig())
    bad = Dataset.from_dict({"tokens": [["a", "b"], ["c", "d"]], "tags": [["O", "O"], ["O"]]})
    with pytest.raises(PeftkitError, match=r"\(train split\) row 2: 2 words in 'tokens' but 1 tags in 'tags'"):
        head.standardize(bad, DataSection(), "train")
    empty = Dataset.from_dict({"tokens": [["a", " "]], "tags": [["O", "O"]]})
    with pytest.raises(PeftkitError, match=r"row 1: word 2 is empty"):
        head.standardize(empty, DataSection(), "train")
    declared = NerHead(NerConfig(labels=["O", "B-PER"]))
    with pytest.raises(PeftkitError, match=r"row 1: tag 'B-LOC' of word 1 is not one of task.labels"):
        declared.standardize(Dataset.from_dict({"tokens": [["x"]], "tags": [["B-LOC"]]}), DataSection(), "train")
    missing = Dataset.from_dict({"words": [["x"]], "tags": [["O"]]})
    with pytest.raises(PeftkitError, match=r"column 'tokens' \(data.tokens_column\) not found"):
        head.standardize(missing, DataSection(), "train")


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_ner_trains_reloads_to_the_trained_logits_and_predicts(write_recipe, tmp_path: Path,
                                                               quantization: str) -> None:
    data = write_ner_conll(tmp_path / "ner.conll", 240)
    overrides = {"task": {"head": "ner", "word_split": "whitespace"}, "data.source": str(data),
                 "data.test_size": 40, "data.validation_size": 20, "train.max_steps": 120}
    if quantization == "4bit":
        overrides |= {"quantization": {"mode": "4bit"}, "method.name": "qlora"}
    out = train_and_reload(write_recipe(overrides), ["alice went to paris today", "the man saw bob in rome"])
    result = out["result"]
    test = result.metrics["test"]
    assert test["f1"] > 0.8, test
    losses = [e["loss"] for e in result.metrics["loss_history"]]
    assert losses[-1] < losses[0] / 3
    [out] = predict(result.output_dir, ["bob went to rome today"])
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in out["entities"]] == [("PER", "bob", 0, 3),
                                                                                      ("LOC", "rome", 12, 16)]
    assert load_run(result.output_dir).head.format_prediction(out).startswith("PER 0-3 bob (")


def test_a_conll_file_with_only_o_tags_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.conll"
    path.write_text("alice O\nleft O\n\n" * 20, encoding="utf-8")
    head = NerHead(NerConfig())
    with pytest.raises(PeftkitError, match=r"o\.conll' \(train split\): every tag in column 'tags' is 'O'; a token "
                                           r"classifier needs at least two tags"):
        load_splits(DataSection(source=str(path), test_size=2, validation_size=2), head, [])
    path.write_text("alice B-PER\nleft O\n\n" * 20, encoding="utf-8")
    assert load_splits(DataSection(source=str(path), test_size=2, validation_size=2), head, [])[1] == ["O", "B-PER"]
