"""Dependency checks in fresh virtual environments: the newest releases, the lowest bounds, the CI constraints.

    python tools/check_deps.py newest    # newest release of every dependency, bounds ignored, then the fast tests
    python tools/check_deps.py oldest    # every dependency at its lower bound, then the fast tests
    python tools/check_deps.py refresh   # resolve within the bounds and rewrite .ci/constraints.txt

Arguments after ``--`` go to pytest: ``python tools/check_deps.py newest -- tests/methods/test_methods.py -k prefix``.

torch is installed first as ``--torch`` names it (default the CPU build CI uses) and kept out of the rest.
Each run prints the installed versions against the range pyproject.toml declares; newest and oldest exit with
pytest's status, so a break is found here, not by a user.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
FAST_TIER = ["-m", "not slow"]


def requirements() -> list[Requirement]:
    """The runtime dependencies and the `test` extra of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def lower_bound(req: Requirement) -> str:
    """`name==X` for the requirement's `>=X`."""
    for spec in req.specifier:
        if spec.operator == ">=":
            return f"{req.name}=={spec.version}"
    raise SystemExit(f"pyproject.toml: '{req}' has no lower bound (>=)")


def run(*cmd: str | Path, cwd: Path = ROOT) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def make_venv(where: Path, torch: str) -> Path:
    """A fresh venv at ``where`` with pip upgraded and torch installed; returns its python."""
    run(sys.executable, "-m", "venv", where)
    python = where / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
    run(python, "-m", "pip", "install", "-q", torch)
    return python


def installed(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze", "--exclude-editable"],
                         capture_output=True, text=True, check=True).stdout
    pins = (line.split("==") for line in out.splitlines() if "==" in line)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def report(python: Path) -> list[str]:
    """Print each dependency's installed version against its declared range; return those outside it."""
    versions = installed(python)
    outside = []
    print(f"\n{'package':<16} {'declared':<22} installed")
    for req in requirements():
        version = versions.get(req.name.lower().replace("_", "-"), "missing")
        inside = version != "missing" and Version(version.split("+")[0]) in req.specifier
        print(f"{req.name:<16} {req.specifier!s:<22} {version}{'' if inside else '   <- outside the range'}")
        if not inside:
            outside.append(f"{req.name} {version}")
    return outside


def fast_tests(python: Path, pytest_args: list[str]) -> int:
    print("+ pytest", *FAST_TIER, *pytest_args, flush=True)
    return subprocess.run([str(python), "-m", "pytest", "-q", *FAST_TIER, *pytest_args], cwd=ROOT).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["newest", "oldest", "refresh"])
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement installed first")
    parser.add_argument("--venv", type=Path, help="where to build the venv (default: a temporary folder)")
    parser.add_argument("--with", dest="extra", action="append", default=[],
                        help="an extra requirement installed last, e.g. transformers==5.23.0 (repeatable)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    pytest_args = argv[cut + 1:]

    with tempfile.TemporaryDirectory(prefix="peftkit-deps-") as tmp:
        python = make_venv(args.venv or Path(tmp) / "venv", args.torch)
        others = [r for r in requirements() if r.name != "torch"]
        if args.mode == "refresh":
            run(python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test,docs]", *args.extra)
            header = (f"# Exact versions CI installs (`pip install -c .ci/constraints.txt`); rewritten by\n"
                      f"# `python tools/check_deps.py refresh` (torch: {args.torch}).\n")
            pins = sorted(f"{name}=={version}" for name, version in installed(python).items()
                          if name not in {"pip", "setuptools", "wheel"})
            CONSTRAINTS.write_text(header + "\n".join(pins) + "\n", encoding="utf-8")
            outside = report(python)
            print(f"\nwrote {CONSTRAINTS.relative_to(ROOT)} ({len(pins)} pins)")
            return 1 if outside else 0
        wanted = [r.name for r in others] if args.mode == "newest" else [lower_bound(r) for r in others]
        run(python, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT)
        run(python, "-m", "pip", "install", "-q", *wanted, *args.extra)
        outside = report(python)
        status = fast_tests(python, pytest_args)
        print(f"\n{args.mode}: pytest exit {status}; outside the declared ranges: {', '.join(outside) or 'none'}")
        return status


if __name__ == "__main__":
    sys.exit(main())
