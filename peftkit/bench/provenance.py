"""Where a result came from: package versions, git commit, device and processor names, recipe hash."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("peftkit", "torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


#: Names the commit of a copy whose own .git cannot (a container built from a source archive, a copy carried to a
#: machine without the repository's history): provenance records it instead of asking git.
COMMIT_VARIABLE = "PEFTKIT_COMMIT"


def git_commit(directory: Path | None = None) -> str | None:
    """The checkout's commit, with ``-dirty`` when tracked files are modified (``$PEFTKIT_COMMIT`` when set); None
    outside a checkout."""
    named = os.environ.get(COMMIT_VARIABLE, "").strip()
    if named:
        return named
    cwd = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def recipe_hash(recipe_yaml: str) -> str:
    """A short content hash of a resolved recipe."""
    return hashlib.sha256(recipe_yaml.encode("utf-8")).hexdigest()[:16]


def collect() -> dict[str, Any]:
    """Everything about this process's software and hardware a result depends on."""
    cuda = torch.cuda.is_available()
    return {
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "device": "cuda" if cuda else "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }
