"""The docs: generated reference pages are current and complete, every page is in the nav, the README is a
short front door, and every shell / Python block of the tutorials and how-to guides runs (or says why not)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tools.docs import DOCS, PAGES, ROOT, _subcommands, render_page

RUNNABLE = {"bash", "sh", "python", ""}  # an unlabelled block counts as a command
GUIDES = sorted([*(DOCS / "tutorials").glob("*.md"), *(DOCS / "how-to").glob("*.md")])
NOT_RUN = re.compile(r"^<!-- not run: (?P<reason>\S.*?) -->$")
RUNS_AFTER = re.compile(r"^<!-- runs after: (?P<page>\S+\.md) -->$", re.M)  # that page's blocks run first, same folder


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason from a `<!-- not run: REASON -->` line just before the fence


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order, each with the `not run` reason written just before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(before)
        blocks.append(Block(page, i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n",
                            marker.group("reason") if marker else None))
        i = end + 1
    return blocks


@pytest.mark.parametrize("page", sorted(PAGES))
def test_generated_reference_pages_are_current(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert render_page(page) == text, f"docs/{page} is stale: run `python tools/docs.py` and commit it"


def test_cli_reference_documents_every_verb() -> None:
    from peftkit.cli import build_parser

    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    verbs: list[str] = []

    def walk(prefix: str, parser) -> None:
        for name, _, sub in _subcommands(parser):
            verbs.append(f"{prefix} {name}")
            walk(f"{prefix} {name}", sub)

    walk("peftkit", build_parser())
    assert {"peftkit train", "peftkit models fetch", "peftkit bench"} <= set(verbs)
    missing = [verb for verb in verbs if f"### `{verb}`" not in text]
    assert not missing, f"docs/reference/cli.md does not document: {missing}"


def test_options_reference_documents_every_recipe_option() -> None:
    from peftkit.config.options import describe_options

    text = (DOCS / "reference" / "options.md").read_text(encoding="utf-8")
    keys = [key for key, _, _ in describe_options()]
    assert "train.learning_rate" in keys
    missing = [key for key in keys if f"| `{key}` |" not in text]
    assert not missing, f"docs/reference/options.md does not list: {missing}"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    return [page for value in node.values() for page in _nav_pages(value)]


def test_every_docs_page_is_in_the_nav() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    nav = _nav_pages(config["nav"])
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert sorted(p for p in nav if not p.startswith("benchmarks/")) == pages


def test_readme_is_a_front_door_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text) if "://" not in t]
    assert "docs/index.md" in targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_guide_block_is_run_or_says_why_not() -> None:
    blocks = [b for page in GUIDES for b in code_blocks(page) if b.lang in RUNNABLE]
    unlabelled = [f"{b.page.name}:{b.line}" for b in blocks if not b.lang and b.not_run is None]
    assert not unlabelled, f"label these blocks bash or python, or mark them <!-- not run: REASON -->: {unlabelled}"
    assert sum(b.not_run is None for b in blocks) >= 9  # the guides keep runnable examples


def _runnable(page: Path) -> list[Block]:
    return [b for b in code_blocks(page) if b.lang in RUNNABLE and b.not_run is None]


_RAN: dict[Path, Path] = {}  # page → a copy of the folder its blocks ran in, for pages that run after it


def _run_blocks(page: Path, folder: Path) -> None:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `peftkit` of this interpreter
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for block in _runnable(page):
        shell = [sys.executable] if block.lang == "python" else ["bash", "-euo", "pipefail"]
        done = subprocess.run([*shell, "-c", block.code], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (f"{block.page.relative_to(ROOT)}:{block.line} failed (exit {done.returncode}):\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def _ran(page: Path, factory: pytest.TempPathFactory) -> Path:
    """A folder holding what ``page``'s blocks left, run once per session."""
    if page not in _RAN:
        folder = factory.mktemp(page.stem)
        _run_blocks(page, folder)
        _RAN[page] = folder
    return _RAN[page]


def _guide_param(page: Path) -> object:
    """``page`` as a test parameter; a page that runs after another shares that page's xdist group (`--dist
    loadgroup` in the slow tier), so the page they start from runs once, on one worker, not once per worker."""
    first = [m.group("page") for m in RUNS_AFTER.finditer(page.read_text(encoding="utf-8"))]
    relative = page.relative_to(DOCS).as_posix()
    followed = any(relative in RUNS_AFTER.findall(other.read_text(encoding="utf-8")) for other in GUIDES)
    group = first[0] if first else relative if followed else None
    return pytest.param(page, marks=pytest.mark.xdist_group(group)) if group else page


@pytest.mark.slow
@pytest.mark.parametrize("page", [_guide_param(p) for p in GUIDES if _runnable(p)],
                         ids=lambda p: p.relative_to(DOCS).as_posix())
def test_guide_blocks_run(page: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each page's runnable blocks, in order, in one folder, as a user would paste them; a page marked
    `<!-- runs after: PAGE -->` starts from what that page's blocks left (its run folder, say)."""
    if page in _RAN:
        return  # its blocks already ran, and passed, before a page that runs after it
    for match in RUNS_AFTER.finditer(page.read_text(encoding="utf-8")):
        shutil.copytree(_ran(DOCS / match.group("page"), tmp_path_factory), tmp_path, dirs_exist_ok=True)
    _run_blocks(page, tmp_path)
    _RAN.setdefault(page, tmp_path)
