"""Third-party plugins registered through the `peftkit.heads` and `peftkit.methods` entry point groups, used from
a recipe.

The plugin package (tests/plugins) is made importable with entry points the way an installed wheel provides them:
a ``*.dist-info`` folder with ``entry_points.txt`` put on ``sys.path``; the registries are rebuilt from the
entry points while the test runs and restored afterwards, so other tests see no plugin.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from peftkit.cli import main
from peftkit.registry import HEADS, METHODS

PLUGIN = Path(__file__).resolve().parents[1] / "plugins"
ENTRY_POINTS = """[peftkit.heads]
demo_topic = peftkit_demo_head:TopicHead

[peftkit.methods]
demo_lora = peftkit_demo_head:DemoLoraMethod
"""


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The demo plugin as if pip-installed: its distribution on the path, the registries re-reading entry points."""
    dist = tmp_path / "site" / "peftkit_demo_head-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peftkit-demo-head\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    for registry in (HEADS, METHODS):
        registry.names()  # the built-ins (and any installed plugin), loaded before the demo is on the path
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "_origins", dict(registry._origins))
        monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield
    sys.modules.pop("peftkit_demo_head", None)


def test_plugin_head_is_listed_and_trains_from_a_recipe(installed_plugins: None, write_recipe,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["heads"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("demo_topic"))
    assert "entry point peftkit_demo_head:TopicHead" in line
    recipe = write_recipe({"task": {"head": "demo_topic", "marker": "=>"}, "train.max_steps": 120})
    assert main(["train", str(recipe)]) == 0, capsys.readouterr().err[-2000:]
    run = yaml.safe_load(recipe.read_text())["output_dir"]
    capsys.readouterr()
    assert main(["predict", run, "the movie was really wonderful"]) == 0, capsys.readouterr().err[-2000:]
    assert capsys.readouterr().out.strip().startswith("=> positive\t")


def test_plugin_method_is_listed_and_validated(installed_plugins: None, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"method": {"name": "demo_lora"}, "quantization": {"mode": "4bit"}}))
    assert main(["methods"]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("demo_lora"))
    assert "demo plugin: LoRA with rank 2 by default" in listed
    assert main(["show", str(recipe), "quantization.mode=none"]) == 0
    shown = capsys.readouterr().out
    assert "name: demo_lora\n" in shown and "\n  r: 2\n" in shown
    assert main(["validate", str(recipe)]) == 2
    assert "'quantization.mode' 4bit does not work with method 'demo_lora' (it supports: none)" in (
        capsys.readouterr().err)


def test_without_the_plugin_the_head_is_unknown(write_recipe, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(write_recipe({"task": {"head": "demo_topic"}}))]) == 2
    err = capsys.readouterr().err
    assert "unknown head 'demo_topic'" in err and "Traceback" not in err


def test_register_names_the_plugin_once_and_checks_its_options() -> None:
    """`register(name)` gives the class its name; a declared name or an options default that disagrees is refused."""
    from peftkit.config.schema import MethodConfig, option
    from peftkit.errors import PeftkitError
    from peftkit.methods.base import Method
    from peftkit.registry import Registry

    registry: Registry = Registry("method", "peftkit.methods", "peftkit.test-none", option="name")

    class MineOptions(MethodConfig):
        name: str = option("mine", "fine-tuning method")

    class Mine(Method):
        config_cls = MineOptions

    registry.register("mine")(Mine)
    assert Mine.name == "mine" and registry._items["mine"] is Mine

    class Renamed(Method):
        config_cls = MineOptions

    with pytest.raises(PeftkitError, match=r"method 'other' \(peftkit\): its options MineOptions.name default to "
                                           r"'mine'; declare name = option\('other', ...\)"):
        registry.register("other")(Renamed)

    class Declared(Method):
        name = "elsewise"
        config_cls = MineOptions

    with pytest.raises(PeftkitError, match=r"class Declared .* declares name 'elsewise' but is registered as 'mine'"):
        registry.register("mine")(Declared)


def test_a_second_thread_waits_for_the_plugins_the_first_is_loading(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench --jobs` looks plugins up from several threads: none may see a half-loaded registry."""
    import threading

    from peftkit.registry import Registry

    registry: Registry = Registry("thing", "slow_things", "peftkit.test-none")
    (tmp_path / "slow_things.py").write_text(
        "import time\nfrom tests_registry_target import registry\ntime.sleep(0.5)\nregistry.register('a')(1)\n",
        encoding="utf-8")
    target = type(sys)("tests_registry_target")
    target.registry = registry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_registry_target", target)
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(registry.get("a"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == [1, 1, 1]
