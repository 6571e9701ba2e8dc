"""README sections generated from the code (recipe options, …): `python tools/docs.py` rewrites them."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from peftkit.config.options import describe_options


def options_table() -> str:
    """Every recipe option with its default and help, as a Markdown table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in describe_options():
        cell, meaning = (text.replace("\n", " ").replace("|", "\\|") for text in (default, help_text))
        lines.append(f"| `{key}` | `{cell}` | {meaning} |")
    return "\n".join(lines)


def methods_table() -> str:
    """Every registered method: heads, quantized bases, trainable share on the default model (`peftkit methods`)."""
    from peftkit.config.sections import ModelSection
    from peftkit.model.method_table import method_rows

    header, *rows = method_rows(ModelSection().name)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


def versions_table() -> str:
    """Each runtime dependency: the range pyproject.toml declares and the version CI tests (.ci/constraints.txt)."""
    import tomllib
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = dict(line.split("==") for line in (root / ".ci" / "constraints.txt").read_text(encoding="utf-8")
                .splitlines() if "==" in line and not line.startswith("#"))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    lines = ["| package | declared range | CI tests |", "|---|---|---|"]
    for req in map(Requirement, declared):
        spec = ", ".join(sorted((str(s) for s in req.specifier), reverse=True))
        lines.append(f"| {req.name} | `{spec}` | {pins.get(req.name.lower(), 'not pinned')} |")
    return "\n".join(lines)


#: Marker name → function rendering the text between `<!-- name:start -->` and `<!-- name:end -->`.
SECTIONS: dict[str, Callable[[], str]] = {
    "options": options_table, "methods": methods_table, "versions": versions_table,
}


def render(readme: str) -> str:
    """``readme`` with every generated section replaced by its current rendering."""
    for name, render_section in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(f"README has no <!-- {name}:start --> … <!-- {name}:end --> markers")
        text = render_section()
        readme = pattern.sub(lambda m, text=text: m.group(1) + text + "\n" + m.group(2), readme)
    return readme


def main() -> int:
    """Rewrite the generated sections of README.md in place (or of the file given)."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
