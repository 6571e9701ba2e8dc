"""A third-party head registered through the `peftkit.heads` entry point group, used from a recipe.

The plugin (tests/plugins) is made importable with an entry point the way an installed wheel provides one: a
``*.dist-info`` folder with ``entry_points.txt`` on the path of a subprocess, so the shared venv stays clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PLUGIN = Path(__file__).parent / "plugins"


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    dist = tmp_path / "site" / "peftkit_demo_head-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peftkit-demo-head\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[peftkit.heads]\ndemo_topic = peftkit_demo_head:TopicHead\n")
    path = os.pathsep.join([str(tmp_path / "site"), str(PLUGIN), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def peftkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftkit", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_plugin_head_is_listed_and_trains_from_a_recipe(plugin_env: dict[str, str], write_recipe) -> None:
    listed = peftkit(plugin_env, "heads")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("demo_topic"))
    assert "entry point peftkit_demo_head:TopicHead" in line
    recipe = write_recipe({"task": {"head": "demo_topic", "marker": "=>"}, "train.max_steps": 120})
    trained = peftkit(plugin_env, "train", str(recipe))
    assert trained.returncode == 0, trained.stderr[-2000:]
    run = yaml.safe_load(recipe.read_text())["output_dir"]
    out = peftkit(plugin_env, "predict", run, "the movie was really wonderful")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("=> positive\t")


def test_without_the_plugin_the_head_is_unknown(write_recipe) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = peftkit(env, "validate", str(write_recipe({"task": {"head": "demo_topic"}})))
    assert result.returncode == 2
    assert "unknown head 'demo_topic'" in result.stderr and "Traceback" not in result.stderr


def test_register_names_the_plugin_once_and_checks_its_options() -> None:
    """`register(name)` gives the class its name; a declared name or an options default that disagrees is refused."""
    from peftkit.errors import PeftkitError
    from peftkit.methods.base import Method
    from peftkit.registry import Registry
    from peftkit.schema import MethodConfig, option

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
