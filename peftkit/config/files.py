"""Recipe files: the named recipes shipped with peftkit, and the safe YAML reader every verb uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

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
        if path.is_dir():
            raise PeftkitError(f"recipe file '{path}' is a directory, expected a file")
        if not path.is_file():
            what = "is not a regular file (a FIFO or device)" if path.exists() else "does not exist"
            raise PeftkitError(f"recipe file '{path}' {what}")
        return path
    recipes = named_recipes()
    if str(name_or_path) not in recipes:
        raise PeftkitError(
            f"unknown recipe '{name_or_path}'{did_you_mean(str(name_or_path), recipes)} "
            "(`peftkit recipes` lists them; a file path must end in .yaml)"
        )
    return recipes[str(name_or_path)]


#: Nodes YAML aliases may add to a document once expanded: far above any recipe, far below a "billion laughs".
ALIAS_NODE_LIMIT = 10_000


_BOOL_TAG = "tag:yaml.org,2002:bool"


class _GuardedLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently), aliases
    that expand beyond ALIAS_NODE_LIMIT nodes and a node that contains itself (a self-referencing alias).

    Only ``true`` and ``false`` are booleans, as in YAML 1.2: YAML 1.1 also reads ``no``, ``off``, ``yes`` and
    ``on`` as booleans, which turned ``eval_strategy: no`` into ``False``. A boolean option still accepts them,
    as text."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node

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


_GuardedLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that contains itself, or whose aliases add more than ALIAS_NODE_LIMIT nodes once
    expanded; walked without recursion, each node's expanded size computed once."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(child)] for child in _children(node))
            continue
        if id(node) in size:
            continue
        on_path.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise yaml.composer.ComposerError(
                    None, None, "an alias refers to a node that contains it (a self-referencing structure)",
                    child.start_mark)
            stack.append((child, False))
    extra = size[id(root)] - len(size)
    if extra > ALIAS_NODE_LIMIT:
        raise yaml.composer.ComposerError(
            None, None, f"aliases expand to {extra:,} more nodes (at most {ALIAS_NODE_LIMIT:,}); write the values "
            "out or use fewer nested aliases", None)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the guarded safe loader; a problem becomes one line naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_GuardedLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise PeftkitError(f"{where}{line}: invalid YAML ({problem})") from None
    except RecursionError:
        raise PeftkitError(f"{where}: invalid YAML (nested too deeply)") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping with the guarded safe loader; syntax errors, duplicate keys, alias bombs and
    self-referencing aliases name the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PeftkitError(f"{path}: not UTF-8 text") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PeftkitError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data
