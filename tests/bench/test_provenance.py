"""Provenance's commit: the checkout's own, -dirty when tracked files changed, or what $PEFTKIT_COMMIT names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from peftkit.bench.provenance import COMMIT_VARIABLE, git_commit


def _git(directory: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_of_a_checkout_and_of_a_copy_that_names_its_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(COMMIT_VARIABLE, raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == f"{head}-dirty"
    copy = tmp_path / "copy"  # a copy without .git (a source archive in a container) says nothing ...
    copy.mkdir()
    assert git_commit(copy) is None
    monkeypatch.setenv(COMMIT_VARIABLE, "b3b1b38")  # ... unless it names its commit, which wins over a stale .git
    assert git_commit(copy) == git_commit(repo) == "b3b1b38"


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_variable_is_not_a_commit(tmp_path: Path, monkeypatch, value: str) -> None:
    monkeypatch.setenv(COMMIT_VARIABLE, value)
    assert git_commit(tmp_path) is None
