"""The package's layers: a module imports only from its own component or from layers below it, never upward and
never in a circle. Read from the source (function-level imports included), so the rule stays true as code moves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import peftkit

PACKAGE = Path(peftkit.__file__).resolve().parent
#: Bottom to top. A module may import from its own component and from any component of a lower layer; components
#: that share a layer do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "quiet", "markers"),
    ("registry",),
    ("config",),
    ("heads", "methods"),
    ("data",),
    ("model",),
    ("hardware",),
    ("rundir",),
    ("training",),
    ("export", "bench", "sweep"),
    ("cli",),
    ("__init__", "__main__"),
]
LAYER = {component: level for level, components in enumerate(LAYERS) for component in components}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def component(module: str) -> str:
    """`peftkit.data.cache` → `data`; the package itself (`peftkit`) → `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every peftkit import that can run: module level and inside functions; imports under
    ``if TYPE_CHECKING:`` (annotations only, never executed) are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
        node.test) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "peftkit":
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.append((node.lineno, target if module_file(target) else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "peftkit"]
    return found


def module_file(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """Module → the peftkit modules importing it runs: their parent packages' ``__init__`` too, except the module's
    own ancestors (Python has started those before the module itself)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        targets = set()
        for _, target in runtime_imports(path):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        name = module_name(path)
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {t for t in targets if t != name and t not in ancestors and module_file(t)}
    return graph


def test_no_module_imports_from_a_higher_layer_or_a_sibling_component() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        mine = component(module_name(path))
        for line, target in runtime_imports(path):
            theirs = component(target)
            if theirs != mine and LAYER[theirs] >= LAYER[mine]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_every_component_has_a_layer() -> None:
    components = {component(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert components <= set(LAYER), f"give these a layer in LAYERS (and CONTRIBUTING.md): {components - set(LAYER)}"


def test_no_import_circle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            raise AssertionError("import circle: " + " -> ".join(cycle))


def test_at_most_eight_modules_directly_under_the_package() -> None:
    assert len(list(PACKAGE.glob("*.py"))) <= 8


def test_loading_a_run_for_prediction_does_not_import_the_trainer_stack() -> None:
    code = ("import sys; import peftkit.rundir.load, peftkit.rundir.inference; "
            "print(sorted(m for m in sys.modules if m.startswith('peftkit.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
