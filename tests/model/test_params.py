"""Parameter counts `peftkit recipes` lists: the table of the named recipes' models agrees with a real count."""

from __future__ import annotations

import pytest

from peftkit.config.files import named_recipes, read_yaml
from peftkit.config.load import recipe_from_dict
from peftkit.config.sections import ModelSection
from peftkit.data.cache import fetch_model
from peftkit.data.catalog import MODELS
from peftkit.model import params


def test_every_named_recipes_model_is_in_the_table() -> None:
    models = {recipe_from_dict(read_yaml(path), source=name).model.name for name, path in named_recipes().items()}
    assert models <= set(params.KNOWN_COUNTS)


def counted_on_the_meta_device(name: str, monkeypatch: pytest.MonkeyPatch) -> int | None:
    monkeypatch.setattr(params, "KNOWN_COUNTS", {})
    return params.parameter_count(ModelSection(name=name))


@pytest.mark.parametrize("name", [n for n in params.KNOWN_COUNTS if n not in MODELS])
def test_table_matches_the_count_of_shipped_hub_configs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    known = params.KNOWN_COUNTS[name]
    assert params.parameter_count(ModelSection(name=name)) == known
    assert counted_on_the_meta_device(name, monkeypatch) == known


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in params.KNOWN_COUNTS if n in MODELS])
def test_table_matches_the_count_of_catalogue_models(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fetch_model(name)
    known = params.KNOWN_COUNTS[name]
    assert params.parameter_count(ModelSection(name=name)) == known
    assert counted_on_the_meta_device(name, monkeypatch) == known


def test_the_table_is_not_used_where_the_count_would_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(params, "is_cached", lambda kind, name: False)
    assert params.parameter_count(ModelSection(name="minilm-l6")) is None  # not fetched: still unknown
    monkeypatch.setattr(params, "KNOWN_COUNTS", {"Qwen/Qwen2.5-1.5B-Instruct": 1})
    tiny = ModelSection(name="Qwen/Qwen2.5-1.5B-Instruct", random_init=True,
                        config_overrides={"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128,
                                          "num_attention_heads": 4, "num_key_value_heads": 2})
    assert params.parameter_count(tiny) > 1  # random_init with overrides: counted
