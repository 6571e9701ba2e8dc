"""Recipe files: the named recipes shipped with peftkit, and the safe YAML reader every verb uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from peftkit.errors import PeftkitError, did_you_mean, first_line


def recipe_dirs() -> list[Path]:
    """Where named recipes live: inside an installed wheel, or the source checkout's recipes/."""
    package = Path(__file__).resolve().parents[1]
    return [d for d in (package / "_recipes", package.parent / "recipes") if d.is_dir()]


def named_recipes() -> dict[str, Path]:
    """Every named recipe, name → file."""
    found: dict[str, Path] = {}
    for directory in recipe_dirs():
        for path in sorted(directory.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file from a name (`sentiment-lora`) or a path; a clear error otherwise."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise PeftkitError(f"recipe file '{path}' does not exist")
        return path
    recipes = named_recipes()
    if str(name_or_path) not in recipes:
        raise PeftkitError(
            f"unknown recipe '{name_or_path}'{did_you_mean(str(name_or_path), recipes)} "
            "(`peftkit recipes` lists them; a file path must end in .yaml)"
        )
    return recipes[str(name_or_path)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping", key_node.start_mark
                )
            if isinstance(key, (str, int, float, bool)) or key is None:
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping with the safe loader; syntax errors and duplicate keys name the file and line."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise PeftkitError(f"{path}{where}: invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise PeftkitError(f"{path}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PeftkitError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data
