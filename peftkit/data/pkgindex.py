"""Download one pinned archive (wheel or sdist) from the package indexes pip is configured to use.

pip's settings are read the way ``pip download`` reads them (its config files, then ``PIP_*`` environment
variables; sections ``[global]`` then ``[download]``): ``index-url``, ``extra-index-url``, ``find-links``,
``no-index``, ``cert``, ``trusted-host``, ``proxy`` and ``timeout``. pip itself is never run, so nothing
is built and no code from the package runs: the archive is a file listed on a PEP 503 (HTML) or PEP 691
(JSON) project page, fetched over http(s) or read from a ``file://`` index, and hashed while it streams. An
archive stops at its pinned size (a stream that sends more is refused at the first byte too many), an index page
at 64 MiB, and a server that sends nothing for pip's ``timeout`` (15 s unless set) is given up on.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import http.client
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TextIO

from peftkit.errors import first_line

DEFAULT_INDEX = "https://pypi.org/simple"
SYSTEM_CONFIG_DIR = Path("/etc")  # pip also reads /etc/pip.conf after the XDG config dirs
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_CHUNK = 1 << 20
PAGE_LIMIT = 64 << 20  # bytes of one project page: PyPI's largest are a few MB
_ALIASES = {"default-timeout": "timeout", "pypi-url": "index-url"}  # pip options with two long names


class IndexLookupError(Exception):
    """Base of the errors below; ``str()`` is one line."""


class IndexUnreachable(IndexLookupError):
    """No configured index that could hold the file answered."""


class NotOnIndex(IndexLookupError):
    """Every index answered, and none lists the pinned file."""


class HashMismatch(IndexLookupError):
    """The archive (or the hash an index lists for it) differs from its pin: the sha256, or more than the size."""


@dataclass(frozen=True)
class IndexConfig:
    """Where pip would look for archives, and how it would connect."""

    index_urls: tuple[str, ...] = (DEFAULT_INDEX,)
    find_links: tuple[str, ...] = ()
    cert: str | None = None
    trusted_hosts: frozenset[str] = field(default_factory=frozenset)
    proxy: str | None = None
    timeout: float = 15.0

    def sources(self) -> tuple[str, ...]:
        """Index URLs, then find-links, in the order they are searched."""
        return self.index_urls + self.find_links


# ---------------------------------------------------------------------------------------------
# pip's configuration


def _config_files() -> list[Path]:
    """pip's config files in increasing priority: global, user, site, then ``$PIP_CONFIG_FILE``."""
    env_file = os.environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = Path.home()
    if sys.platform == "win32":
        program_data = Path(os.environ.get("PROGRAMDATA", "C:/ProgramData"))
        appdata = Path(os.environ.get("APPDATA", home / "AppData" / "Roaming"))
        global_files = [program_data / "pip" / "pip.ini"]
        user_files = [home / "pip" / "pip.ini", appdata / "pip" / "pip.ini"]
        site_file = Path(sys.prefix) / "pip.ini"
    else:
        xdg_dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
        global_files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d]
        global_files.append(SYSTEM_CONFIG_DIR / "pip.conf")
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        user_files = [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
        if sys.platform == "darwin" and not user_files[1].exists():
            user_files[1] = home / "Library" / "Application Support" / "pip" / "pip.conf"
        site_file = Path(sys.prefix) / "pip.conf"
    files = global_files
    if not (env_file and Path(env_file).exists()):
        files += user_files
    files.append(site_file)
    if env_file:
        files.append(Path(env_file))
    return files


def _settings() -> dict[str, str]:
    """pip's option values for ``pip download`` as ``{option: raw string}``, later sources winning."""
    values: dict[str, str] = {}

    def put(key: str, value: str) -> None:
        key = key.lower().replace("_", "-")
        values[_ALIASES.get(key, key)] = value

    for path in _config_files():
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise IndexLookupError(f"pip config file {path} cannot be read ({first_line(exc)})") from exc
        for section in ("global", "download"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    put(key, value)
    for name, value in os.environ.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            put(name[4:], value)
    return values


def _true(value: str) -> bool:
    return value.strip().lower() in ("1", "y", "yes", "t", "true", "on")


def pip_index_config() -> IndexConfig:
    """The indexes, find-links and connection settings ``pip download`` would use here."""
    s = _settings()
    index = (s.get("index-url") or DEFAULT_INDEX).strip()
    indexes = () if _true(s.get("no-index", "")) else (index, *s.get("extra-index-url", "").split())
    try:
        seconds = float(s.get("timeout", "15"))
    except ValueError:
        seconds = 15.0
    return IndexConfig(
        index_urls=tuple(dict.fromkeys(indexes)),
        find_links=tuple(s.get("find-links", "").split()),
        cert=s.get("cert") or None,
        trusted_hosts=frozenset(s.get("trusted-host", "").split()),
        proxy=s.get("proxy") or None,
        timeout=seconds,
    )


# ---------------------------------------------------------------------------------------------
# Reading index pages


def redact(url: str) -> str:
    """``url`` without a password (``user:****@host``), for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_version(filename: str) -> tuple[str, str] | None:
    """(project, version) of a wheel or sdist file name, or None for other files."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (_normalize(parts[0]), parts[1]) if len(parts) >= 5 else None
    match = re.fullmatch(r"(.+)-([^-]+)\.(tar\.gz|tar\.bz2|tgz|zip)", filename)
    return (_normalize(match[1]), match[2]) if match else None


def archive_matches(filename: str, package: str, version: str) -> bool:
    """Whether wheel or sdist ``filename`` is a file of ``package==version``."""
    return _name_version(filename) == (_normalize(package), version)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


@dataclass(frozen=True)
class _File:
    filename: str
    url: str
    sha256: str | None


def _files_from_html(text: str, base: str) -> list[_File]:
    parser = _Links()
    parser.feed(text)
    files = []
    for href in parser.hrefs:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        sha = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
        files.append(_File(filename, url, sha))
    return files


def _files_from_json(text: str, base: str) -> list[_File]:
    return [
        _File(f["filename"], urllib.parse.urljoin(base, f["url"]), (f.get("hashes") or {}).get("sha256"))
        for f in json.loads(text).get("files", [])
    ]


def _local_path(url: str) -> Path | None:
    """The path of a ``file:`` URL or a plain path (find-links), else None."""
    if url.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    return None if "://" in url else Path(url)


class _Client:
    """Opens http(s) and file URLs with pip's certificate, trusted hosts, proxy, timeout and URL credentials."""

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        handlers: list[urllib.request.BaseHandler] = []
        if config.proxy:
            handlers.append(urllib.request.ProxyHandler({"http": config.proxy, "https": config.proxy}))
        cert = config.cert
        try:
            verified = ssl.create_default_context(
                cafile=cert if cert and not os.path.isdir(cert) else None,
                capath=cert if cert and os.path.isdir(cert) else None,
            )
        except OSError as exc:
            raise IndexLookupError(f"pip's cert setting {cert} cannot be read ({exc})") from exc
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        self.openers = {
            trusted: urllib.request.build_opener(*handlers, urllib.request.HTTPSHandler(context=ctx))
            for trusted, ctx in ((False, verified), (True, unverified))
        }
        self.credentials: dict[str, str] = {}  # host -> "user:password" taken from index URLs
        for source in config.sources():
            self.clean(source)

    def clean(self, url: str) -> str:
        """Strip and remember credentials in ``url``; they are sent to that host only."""
        parts = urllib.parse.urlsplit(url)
        if parts.username is None:
            return url
        user = urllib.parse.unquote(parts.username)
        self.credentials[parts.hostname or ""] = f"{user}:{urllib.parse.unquote(parts.password or '')}"
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc or ""))

    def open(self, url: str, accept: str | None = None) -> http.client.HTTPResponse:
        host = urllib.parse.urlsplit(url).hostname or ""
        request = urllib.request.Request(url, headers={"User-Agent": "peftkit"})
        if accept:
            request.add_header("Accept", accept)
        if host in self.credentials:
            token = base64.b64encode(self.credentials[host].encode()).decode()
            request.add_unredirected_header("Authorization", f"Basic {token}")
        return self.openers[host in self.config.trusted_hosts].open(request, timeout=self.config.timeout)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"no answer for {timeout:g} s, pip's `timeout` setting (PIP_DEFAULT_TIMEOUT)"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _project_files(client: _Client, source: str, package: str) -> list[_File] | None:
    """Files listed for ``package`` at an index URL or find-links location; None when it has no such page."""
    is_index = source in client.config.index_urls
    local = _local_path(source)
    if local is not None:
        page = local / _normalize(package) if is_index else local
        if is_index and not local.is_dir():
            raise OSError(f"{local} is not a directory")
        if page.is_dir() and (page / "index.html").is_file():
            page = page / "index.html"
        if page.is_dir():
            return [_File(p.name, p.as_uri(), None) for p in sorted(page.iterdir()) if p.is_file()]
        if not page.is_file():
            if is_index:
                return None
            raise OSError(f"{local} does not exist")
        return _files_from_html(page.read_text(encoding="utf-8", errors="replace"), page.as_uri())
    url = client.clean(source)
    if is_index:
        url = url.rstrip("/") + f"/{_normalize(package)}/"
    try:
        with client.open(url, _ACCEPT if is_index else None) as response:
            body = response.read(PAGE_LIMIT + 1)
            if len(body) > PAGE_LIMIT:
                raise IndexLookupError(f"{redact(url)} sent a page larger than {PAGE_LIMIT >> 20} MiB; refusing")
            text = body.decode("utf-8", errors="replace")
            content_type = response.headers.get("Content-Type", "")
            base = response.geturl()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    if "json" in content_type:
        return _files_from_json(text, base)
    return _files_from_html(text, base)


def locate(package: str, version: str, filename: str, sha256: str, config: IndexConfig) -> str:
    """The URL of ``filename`` (a file of ``package==version``) on the first configured source listing it.

    Raises ``HashMismatch`` when that source lists a different sha256 than ``sha256``, ``IndexUnreachable``
    when no source lists it and one could not be read, ``NotOnIndex`` when every source answered.
    """
    client = _Client(config)
    unreachable: list[str] = []
    versions: set[str] = set()
    others: list[str] = []  # other files of this very version
    if not config.sources():
        raise NotOnIndex("pip is configured with no index (no-index) and no find-links")
    for source in config.sources():
        try:
            files = _project_files(client, source, package)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            unreachable.append(f"{redact(source)} is unreachable: {_reason(exc, config.timeout)}")
            continue
        for f in files or []:
            if f.filename == filename:
                if f.sha256 and f.sha256 != sha256:
                    raise HashMismatch(
                        f"sha256 mismatch for archive {filename} listed on {redact(source)}: "
                        f"expected {sha256}, got {f.sha256} (as the index lists it)"
                    )
                return f.url
            name_version = _name_version(f.filename)
            if name_version and name_version[0] == _normalize(package):
                versions.add(name_version[1])
                if name_version[1] == version:
                    others.append(f.filename)
    if unreachable:
        raise IndexUnreachable(f"package index {unreachable[0]}")
    where = ", ".join(redact(s) for s in config.sources())
    if others:
        raise NotOnIndex(f"{where} lists {', '.join(others)} for {package}=={version} but not {filename}")
    if versions:
        listed = ", ".join(sorted(versions, key=_version_key)[-8:])
        raise NotOnIndex(f"{package}=={version} is not on {where} (versions there: {listed})")
    raise NotOnIndex(f"{package} is not on {where}")


def _version_key(version: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+-]", version))


# ---------------------------------------------------------------------------------------------
# Downloading


Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


def download(
    url: str, dest: Path, sha256: str, size: int, config: IndexConfig, progress: Progress | None = None
) -> None:
    """Stream ``url`` into ``dest`` while hashing; ``dest`` is removed unless its sha256 is ``sha256``.

    The stream is cut at ``size + 1`` bytes (the pinned size; more is refused), and a read that waits longer than
    ``config.timeout`` fails; ``dest`` is removed on any failure, an interrupt included.
    """
    client = _Client(config)
    local = _local_path(url)
    digest = hashlib.sha256()
    try:
        with open(local, "rb") if local is not None else client.open(client.clean(url)) as src:
            length = local.stat().st_size if local is not None else src.headers.get("Content-Length")
            if length is not None and str(length).isdigit() and int(length) > size:
                raise HashMismatch(
                    f"archive {dest.name} from {redact(url)} is {int(length)} bytes, more than the pinned {size}; "
                    "refusing"
                )
            done = 0
            with open(dest, "wb") as out:
                while chunk := src.read(min(_CHUNK, size + 1 - done)):
                    done += len(chunk)
                    if done > size:
                        raise HashMismatch(
                            f"archive {dest.name} from {redact(url)} sent more than the pinned {size} bytes; refusing"
                        )
                    digest.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(done, size)
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        dest.unlink(missing_ok=True)
        raise IndexUnreachable(f"download of {redact(url)} failed ({_reason(exc, config.timeout)})") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        dest.unlink()
        raise HashMismatch(
            f"sha256 mismatch for archive {dest.name} from {redact(url)}: expected {sha256}, got {digest.hexdigest()}"
        )


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class StderrProgress:
    """Progress of one large download on stderr: redrawn in place on a terminal, a line per quarter otherwise."""

    def __init__(self, label: str, min_bytes: int = 5_000_000, stream: TextIO | None = None) -> None:
        self.label = label
        self.min_bytes = min_bytes
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.shown: tuple[int, bool] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if total is not None and total < self.min_bytes:
            return
        finished = total is not None and done >= total
        if total:
            step = 100 * done // total if self.tty else 25 * (4 * done // total)
        else:
            step = done >> (24 if self.tty else 26)  # every 16 MB (64 MB in a log) when the size is unknown
        if (step, finished) == self.shown:
            return
        self.shown = (step, finished)
        size = f"{done / 1e6:,.1f} MB"
        if total:
            size += f" / {total / 1e6:,.1f} MB {100 * done // total:3d} %"
        rate = done / 1e6 / max(time.monotonic() - self.start, 1e-3)
        line = f"{self.label}: {size} ({rate:,.1f} MB/s)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
