"""Doc pages generated from the code (recipe options, CLI verbs, catalogue, methods, versions).

`python tools/docs.py` rewrites the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in the pages of
`docs/` that `PAGES` names; tests/test_docs.py fails when a page is out of date.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from peftkit.config.options import describe_options

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def options_table() -> str:
    """Every recipe option with its default and help, as a Markdown table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in describe_options():
        lines.append(f"| `{key}` | `{_cell(default)}` | {_cell(help_text)} |")
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

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = dict(line.split("==") for line in (ROOT / ".ci" / "constraints.txt").read_text(encoding="utf-8")
                .splitlines() if "==" in line and not line.startswith("#"))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    lines = ["| package | declared range | CI tests |", "|---|---|---|"]
    for req in map(Requirement, declared):
        spec = ", ".join(sorted((str(s) for s in req.specifier), reverse=True))
        lines.append(f"| {req.name} | `{spec}` | {pins.get(req.name.lower(), 'not pinned')} |")
    return "\n".join(lines)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each sub-command of ``parser``, in declaration order."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        return []
    helps = {a.dest: a.help or "" for a in actions[0]._choices_actions}
    return [(name, helps.get(name, ""), sub) for name, sub in actions[0].choices.items()]


def cli_reference() -> str:
    """Every `peftkit` verb (and sub-verb) with its `-h` text, straight from the parser."""
    from peftkit.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page must not depend on it
    out: list[str] = []

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        for name, help_text, sub in _subcommands(parser):
            out.extend([f"### `{prefix} {name}`", "", f"{help_text}.", "", "```text", sub.format_help().rstrip(),
                        "```", ""])
            walk(f"{prefix} {name}", sub)

    walk("peftkit", build_parser())
    return "\n".join(out).rstrip()


def catalogue_table() -> str:
    """Every catalogue model and data set with its description, package and licence."""
    from peftkit.data import catalog

    lines = []
    for title, entries in (("Models", catalog.MODELS), ("Data sets", catalog.DATASETS)):
        lines += [f"### {title}", "", "| name | what | package | licence |", "|---|---|---|---|"]
        for name, entry in entries.items():
            package = ", ".join(sorted({f"`{m.package}=={m.version}`" for m in entry.members}))
            lines.append(f"| `{name}` | {_cell(entry.description)} | {package} | {_cell(entry.licence)} |")
        lines.append("")
    return "\n".join(lines).rstrip()


#: Page under docs/ → marker name → function rendering the text between its markers.
PAGES: dict[str, dict[str, Callable[[], str]]] = {
    "reference/options.md": {"options": options_table},
    "reference/cli.md": {"cli": cli_reference},
    "reference/catalogue.md": {"catalogue": catalogue_table},
    "how-to/choose-method.md": {"methods": methods_table},
    "getting-started/install.md": {"versions": versions_table},
}


def render(text: str, sections: dict[str, Callable[[], str]]) -> str:
    """``text`` with each of ``sections`` replaced by its current rendering."""
    for name, render_section in sections.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"page has no <!-- {name}:start --> … <!-- {name}:end --> markers")
        rendered = render_section()
        text = pattern.sub(lambda m, rendered=rendered: m.group(1) + rendered + "\n" + m.group(2), text)
    return text


def render_page(page: str) -> str:
    """The current text of ``docs/<page>`` with its generated sections brought up to date."""
    return render((DOCS / page).read_text(encoding="utf-8"), PAGES[page])


def main() -> int:
    """Rewrite the generated sections of every page in PAGES."""
    for page in PAGES:
        path = DOCS / page
        text = render_page(page)
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
