"""The files peftkit writes get the modes a plain write gives under the umask, weights and bookkeeping included."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from testkit import make_tiny, write_head_recipe

import peftkit
from peftkit.export import export_run


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> int:
    mask = request.param
    previous = os.umask(mask)
    yield mask
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True)
def test_run_checkpoints_and_export_follow_the_umask(umask: int, tmp_path: Path) -> None:
    tiny = make_tiny(tmp_path / "tiny")
    run = peftkit.train(write_head_recipe(tiny, "sentiment", tmp_path / "run", **{
        "train.save_strategy": "steps", "train.save_steps": 4, "train.save_total_limit": 5})).output_dir
    out = tmp_path / "merged"
    export_run(run, out)
    files, folders = 0o666 & ~umask, 0o777 & ~umask
    assert {"adapter_model.safetensors", "checkpoints/checkpoint-4/adapter_model.safetensors",
            ".peftkit-manifest.json", ".peftkit-lock", "README.md"} <= set(_modes(run))
    assert {"model.safetensors", ".peftkit-manifest.json", "export_report.json"} <= set(_modes(out))
    for root in (run, out):
        modes = _modes(root)
        wrong = {name: oct(mode) for name, mode in modes.items()
                 if mode != (folders if (root / name).is_dir() else files)}
        assert wrong == {}, f"{root}: expected {oct(files)} for files and {oct(folders)} for folders"
