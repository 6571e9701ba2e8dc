"""The recipe schema: named recipes, defaults, dotted overrides, and one-line errors for bad recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peftkit.config.files import named_recipes
from peftkit.config.load import load_recipe, recipe_from_dict
from peftkit.config.options import describe_options
from peftkit.config.overrides import apply_overrides, parse_override
from peftkit.errors import PeftkitError


def test_every_named_recipe_validates() -> None:
    recipes = named_recipes()
    assert "sentiment-lora" in recipes
    for name in recipes:
        recipe = load_recipe(name)
        assert recipe.description, f"{name} has no description"
        assert recipe.output_dir == f"runs/{name}"


def test_defaults_are_filled_in() -> None:
    recipe = recipe_from_dict({})
    assert recipe.model.name == "minilm-l6"
    assert recipe.method.name == "lora" and recipe.method.r == 8
    assert recipe.quantization.mode == "none"
    assert recipe.train.learning_rate == 5e-4, "an empty learning rate takes the method's default"
    assert recipe_from_dict({"method": "full"}).train.learning_rate == 3e-5


def test_shorthands_expand() -> None:
    recipe = recipe_from_dict({"method": "qlora", "quantization": "4bit", "task": "sentiment"})
    assert (recipe.method.name, recipe.quantization.mode, recipe.task.head) == ("qlora", "4bit", "sentiment")
    assert recipe.task.labels == ["negative", "positive"]


def test_method_options_are_typed_per_method() -> None:
    recipe = recipe_from_dict({"method": {"name": "dora", "r": 4}})
    assert recipe.method.use_dora is True and recipe.method.r == 4
    assert recipe.model_dump()["method"]["r"] == 4


def test_dotted_overrides_are_parsed_as_yaml_and_applied() -> None:
    assert parse_override("train.epochs=2") == ("train.epochs", 2)
    assert parse_override("method.target_modules=[query, value]") == ("method.target_modules", ["query", "value"])
    assert parse_override("output_dir=runs/x") == ("output_dir", "runs/x")
    assert parse_override("train.metric_for_best_model=null") == ("train.metric_for_best_model", None)
    raw = {"train": {"epochs": 1}}
    changed = apply_overrides(raw, {"train.epochs": 3, "method.r": 16})
    assert changed == {"train": {"epochs": 3}, "method": {"r": 16}}
    assert raw == {"train": {"epochs": 1}}, "overrides must not modify the original mapping"


def test_overrides_on_a_named_recipe() -> None:
    recipe = load_recipe("sentiment-lora", ["train.epochs=2", "method.r=16", "output_dir=runs/x"])
    assert (recipe.train.epochs, recipe.method.r, recipe.output_dir) == (2, 16, "runs/x")


def test_resolved_recipe_round_trips_through_yaml() -> None:
    recipe = load_recipe("sentiment-lora")
    again = recipe_from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe


def test_every_option_has_help_text() -> None:
    rows = describe_options()
    assert len(rows) > 40
    missing = [key for key, _, help_text in rows if not help_text]
    assert not missing, f"options without help: {missing}"


BAD_RECIPES = [
    ({"train": {"lr": 0.1}}, "unknown key 'train.lr'; did you mean 'train.learning_rate'?"),
    ({"trian": {"epochs": 1}}, "unknown section 'trian'; did you mean 'train'?"),
    ({"method": {"name": "lora", "rank": 8}}, "unknown key 'method.rank'"),
    ({"method": {"name": "lora", "rr": 8}}, "did you mean 'method.r'?"),
    ({"train": {"epochs": "two"}}, "'train.epochs': input should be a valid number"),
    ({"train": {"batch_size": 0}}, "'train.batch_size': input should be greater than or equal to 1"),
    ({"train": {"optim": "adamw"}}, "'train.optim': input should be"),
    ({"quantization": {"mode": "3bit"}}, "'quantization.mode': input should be 'none', '8bit' or '4bit'"),
    ({"method": {"name": "lorra"}}, "'method.name': unknown method 'lorra'; did you mean 'lora'?"),
    ({"task": {"head": "sentimnet"}}, "'task.head': unknown head 'sentimnet'; did you mean 'sentiment'?"),
    ({"method": {"name": "qlora"}}, "'quantization.mode' none does not work with method 'qlora'"),
    ({"method": {"name": "full"}, "quantization": {"mode": "4bit"}}, "does not work with method 'full'"),
    ({"data": {"source": "./missing.csv"}}, "'data.source': file './missing.csv' does not exist"),
    ({"data": {"source": "missing.iob"}}, "'data.source': file 'missing.iob' does not exist"),  # one suffix table
    ({"data": {"files": {"train": "/nope/train.csv"}}}, "'data.files.train': file '/nope/train.csv' does not exist"),
    ({"data": {"files": {"dev": "x.csv"}}}, "'data.files.dev': input should be 'train', 'validation' or 'test'"),
    ({"model": {"name": "./no-such-model"}}, "'model.name': directory './no-such-model' does not exist"),
    ({"model": "minilm-l6"}, "'model' must be a mapping of options"),
    ({"train": {"early_stopping_patience": 2, "eval_strategy": "no"}}, "needs train.eval_strategy"),
    ({"method": {"name": "lora", "dropout": 1.5}}, "'method.dropout': input should be less than 1"),
    ({"output_dir": ["a"]}, "'output_dir': input should be a valid string"),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_RECIPES, ids=[e for _, e in BAD_RECIPES])
def test_bad_recipe_gives_one_line_error_naming_the_key(raw: dict, expected: str) -> None:
    with pytest.raises(PeftkitError) as info:
        recipe_from_dict(raw, source="my.yaml")
    message = str(info.value)
    assert expected in message
    assert message.startswith("my.yaml: ")
    assert "\n" not in message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: 1\n  batch_size: [1\n", encoding="utf-8")
    with pytest.raises(PeftkitError, match=r"broken\.yaml line \d+: invalid YAML"):
        load_recipe(path)


def test_recipe_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(PeftkitError, match="must be a mapping of sections, got list"):
        load_recipe(path)


def test_unknown_recipe_name_suggests_the_closest() -> None:
    with pytest.raises(PeftkitError, match="unknown recipe 'sentiment-lroa'; did you mean 'sentiment-lora'"):
        load_recipe("sentiment-lroa")


def test_missing_recipe_file() -> None:
    with pytest.raises(PeftkitError, match=r"recipe file 'nope\.yaml' does not exist"):
        load_recipe("nope.yaml")


def test_malformed_override() -> None:
    with pytest.raises(PeftkitError, match=r"must look like section\.key=value"):
        load_recipe("sentiment-lora", ["train.epochs"])
    with pytest.raises(PeftkitError, match=r"'train\.epochs' is not a section"):
        load_recipe("sentiment-lora", ["train.epochs=1", "train.epochs.x=2"])
