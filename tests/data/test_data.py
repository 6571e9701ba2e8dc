"""Data loading: every local file format, pre-split files, deterministic splits, catalogue data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from testkit import make_sentiment_rows, write_csv, write_json_lines

from peftkit.config.schema import HeadConfig
from peftkit.config.sections import DataSection
from peftkit.data import load_splits
from peftkit.errors import PeftkitError
from peftkit.heads.classification import ClassificationHead

ROWS = make_sentiment_rows(60)
HEAD = ClassificationHead(HeadConfig())


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows in the format the suffix names."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        write_csv(path, rows, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".jsonl":
        write_json_lines(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_each_file_format_loads_and_splits(tmp_path: Path, suffix: str) -> None:
    path = write_rows(tmp_path / f"data{suffix}", ROWS)
    splits, labels = load_splits(DataSection(source=str(path), test_size=10, validation_size=5), HEAD, [])
    assert labels == ["negative", "positive"]
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [45, 5, 10]
    every_text = sorted(t for s in splits.values() for t in s["text"])
    assert every_text == sorted(r["text"] for r in ROWS)


def test_custom_columns_and_integer_labels(tmp_path: Path) -> None:
    rows = [{"review": r["text"], "stars": int(r["label"] == "positive")} for r in ROWS]
    path = write_rows(tmp_path / "d.csv", rows)
    data = DataSection(source=str(path), text_column="review", label_column="stars", test_size=0.2)
    splits, labels = load_splits(data, HEAD, [])
    assert labels == ["0", "1"]
    assert set(splits["train"].column_names) == {"text", "label"}


def test_splits_are_deterministic_and_seeded(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", ROWS)
    first, _ = load_splits(DataSection(source=str(path)), HEAD, [])
    again, _ = load_splits(DataSection(source=str(path)), HEAD, [])
    other, _ = load_splits(DataSection(source=str(path), split_seed=7), HEAD, [])
    assert first["test"]["text"] == again["test"]["text"]
    assert first["test"]["text"] != other["test"]["text"]


def test_pre_split_files_are_kept_as_given(tmp_path: Path) -> None:
    files = {name: str(write_rows(tmp_path / f"{name}.csv", ROWS[i * 20:(i + 1) * 20]))
             for i, name in enumerate(("train", "validation", "test"))}
    splits, _ = load_splits(DataSection(files=files), HEAD, [])
    assert splits["test"]["text"] == [r["text"] for r in ROWS[40:60]]
    assert splits["train"]["text"] == [r["text"] for r in ROWS[:20]]


def test_sample_limits(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.csv", ROWS)
    data = DataSection(source=str(path), test_size=20, validation_size=10, max_train_samples=7, max_eval_samples=4)
    splits, _ = load_splits(data, HEAD, [])
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [7, 4, 4]


def test_catalogue_data_set(tmp_path: Path) -> None:
    splits, labels = load_splits(DataSection(source="movie-snippets", test_size=1000, validation_size=500), HEAD, [])
    assert labels == ["negative", "positive"]
    assert len(splits["test"]) == 1000 and len(splits["validation"]) == 500
    assert len(splits["train"]) == 10043 - 1500


@pytest.mark.parametrize(
    ("rows", "column", "expected"),
    [
        ([{"body": "x", "label": "a"}] * 3, {}, "column 'text' (data.text_column) not found; columns are: body, label"),
        ([{"text": "fine", "label": "a"}, {"text": "  ", "label": "b"}], {}, "row 2: empty or missing text"),
        ([{"text": "fine", "label": "a"}, {"text": "ok", "label": ""}], {}, "row 2: missing label in column 'label'"),
        ([{"text": "fine", "y": "a"}], {"label_column": "label"}, "column 'label' (data.label_column) not found"),
    ],
)
def test_bad_rows_name_the_row_or_column(tmp_path: Path, rows: list[dict], column: dict, expected: str) -> None:
    path = write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(PeftkitError) as info:
        load_splits(DataSection(source=str(path), **column), HEAD, [])
    assert expected in str(info.value)


def test_unsupported_format_and_bad_encoding(tmp_path: Path) -> None:
    sheet = tmp_path / "d.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    with pytest.raises(PeftkitError, match=r"unsupported format '\.xlsx' \(expected one of \.csv"):
        load_splits(DataSection(source=str(sheet)), HEAD, [])
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 cr\xe8me,positive\n".encode("latin-1"))
    with pytest.raises(PeftkitError, match=r"latin\.csv': not UTF-8 text"):
        load_splits(DataSection(source=str(latin)), HEAD, [])


def test_a_file_that_does_not_parse_gives_only_peftkits_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"text": "fine", "label": "positive"}\n{broken\n', encoding="utf-8")
    with pytest.raises(PeftkitError, match=r"b\.jsonl': could not be read as json \(JSON parse error"):
        load_splits(DataSection(source=str(broken)), HEAD, [])
    assert "Failed to load JSON" not in capfd.readouterr().err  # datasets logged the parser's error too


def test_one_label_in_the_training_split_is_refused_naming_file_and_label(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "one.csv", [{"text": f"film {i}", "label": "positive"} for i in range(30)])
    for declared in ([], ["negative", "positive"]):
        with pytest.raises(PeftkitError, match=r"one\.csv' \(train split\): column 'label' holds only the label "
                                               r"'positive'; a classifier needs at least two labels"):
            load_splits(DataSection(source=str(path), test_size=5, validation_size=5), HEAD, declared)


def test_labels_spelling_one_number_two_ways_are_refused(tmp_path: Path) -> None:
    rows = [{"text": f"film {i}", "label": ("0", "1", "1.0")[i % 3]} for i in range(30)]
    path = write_rows(tmp_path / "n.jsonl", rows)
    with pytest.raises(PeftkitError, match=r"column 'label': labels '1' and '1\.0' are one number written two ways"):
        load_splits(DataSection(source=str(path), test_size=5, validation_size=5), HEAD, [])
    files = {"train": write_rows(tmp_path / "train.jsonl", [{"text": f"f {i}", "label": str(i % 2)} for i in range(9)]),
             "test": write_rows(tmp_path / "test.jsonl", [{"text": "g", "label": "1.0"}])}
    from peftkit.heads.classification import same_number

    assert same_number(["1.0", "2", "1"]) == ("1", "1.0") and same_number(["1", "01", "inf", "Infinity"]) is None
    splits, labels = load_splits(DataSection(files={k: str(v) for k, v in files.items()}), HEAD, [])
    with pytest.raises(PeftkitError, match=r"label '1\.0' .* '1' and '1\.0' are one number written two ways"):
        HEAD.label_ids(splits["test"], {name: i for i, name in enumerate(labels)})


def test_conll_words_keep_a_non_breaking_space(tmp_path: Path) -> None:
    from peftkit.data.conll import read_conll
    from peftkit.data.parsers import parse_token_columns

    path = tmp_path / "nb.conll"
    path.write_text("New\u00a0York B-LOC\nis\tO\n\nBob  B-PER\n", encoding="utf-8")
    assert read_conll(path)["tokens"] == [["New\u00a0York", "is"], ["Bob"]]
    assert parse_token_columns([path], 2) == [{"tokens": ["New\u00a0York", "is"], "tags": ["B-LOC", "O"]},
                                              {"tokens": ["Bob"], "tags": ["B-PER"]}]

