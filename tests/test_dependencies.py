"""Declared dependency ranges agree with what CI installs: every requirement has a tested lower and upper
bound, CI pins each one, and each pin lies inside the declared range (so CI tests what users get)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
REQUIREMENTS = [Requirement(r) for r in PROJECT["dependencies"]] + [
    Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra
]


def _pins() -> dict[str, Version]:
    lines = (ROOT / ".ci" / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = (line.split("==") for line in lines if line and not line.startswith("#"))
    return {name.lower().replace("_", "-"): Version(version.split("+")[0]) for name, version in pins}


@pytest.mark.parametrize("req", REQUIREMENTS, ids=str)
def test_every_requirement_has_a_lower_and_an_upper_bound(req: Requirement) -> None:
    operators = {spec.operator for spec in req.specifier}
    assert ">=" in operators and "<" in operators, f"{req}: declare >=lowest,<next-untested"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=str)
def test_ci_pins_every_requirement_inside_its_range(req: Requirement) -> None:
    pins = _pins()
    name = req.name.lower().replace("_", "-")
    assert name in pins, f"{req.name} is not in .ci/constraints.txt: run `python tools/check_deps.py refresh`"
    assert pins[name] in req.specifier, f".ci/constraints.txt pins {req.name} {pins[name]}, outside {req}"


def test_a_package_named_in_several_extras_has_one_range() -> None:
    ranges: dict[str, set[str]] = {}
    for req in REQUIREMENTS:
        ranges.setdefault(req.name, set()).add(str(req.specifier))
    assert {name: r for name, r in ranges.items() if len(r) > 1} == {}


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    """The slow tier's `--dist loadgroup` keeps each xdist_group on one worker (the torchrun launches one after
    another; the guides that start from one page's run folder beside it): pytest-xdist 3.8 under pytest 9.2 spread
    them over the workers without a word (pytest-dev/pytest-xdist#1386)."""
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""
        import os
        from pathlib import Path

        import pytest

        @pytest.mark.xdist_group("one")
        @pytest.mark.parametrize("i", range(6))
        def test_grouped(i: int) -> None:
            Path(f"ran-{i}").write_text(os.environ["PYTEST_XDIST_WORKER"])
    """), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p",
                           "no:cacheprovider", "test_grouped.py"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    workers = {path.read_text() for path in tmp_path.glob("ran-*")}
    assert len(list(tmp_path.glob("ran-*"))) == 6 and len(workers) == 1, workers
