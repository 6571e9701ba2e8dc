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


def test_only_true_and_false_are_booleans(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("method: {name: lora, use_dora: yes}\ntrain: {eval_strategy: no, tf32: off}\n", encoding="utf-8")
    recipe = load_recipe(path, ["train.save_strategy=no", "model.lowercase=on"])
    assert (recipe.train.eval_strategy, recipe.train.save_strategy) == ("no", "no")
    assert (recipe.method.use_dora, recipe.train.tf32, recipe.model.lowercase) == (True, False, True)
    assert parse_override("x=no") == ("x", "no") and parse_override("x=False") == ("x", False)


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
    ({"model": {"lowercase": "maybe"}}, "'model.lowercase': input should be true, false or 'auto' (got 'maybe')"),
    ({"train": {"tf32": 3}}, "'train.tf32': input should be true, false or 'auto' (got 3)"),
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


def test_anchors_and_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("method: {name: lora, target_modules: &t [query, value]}\n"
                    "description: shared\ntrain: {report_to: &r [none]}\ndistributed: {fsdp: true, wrap: *t}\n",
                    encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.method.target_modules == ["query", "value"] and recipe.distributed.wrap == ["query", "value"]


def test_alias_bomb_and_self_reference_are_refused_by_every_reader(tmp_path: Path) -> None:
    from peftkit.config.files import ALIAS_NODE_LIMIT, parse_yaml, read_yaml
    from peftkit.rundir.table import find_runs

    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 4)]  # 11,110 nodes expanded
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PeftkitError, match=rf"bomb\.yaml: invalid YAML \(aliases expand to [\d,]+ more nodes "
                                           rf"\(at most {ALIAS_NODE_LIMIT:,}\)"):
        read_yaml(bomb)
    assert len(parse_yaml("\n".join(lines[:3]), "small")["a2"]) == 10  # 1,110 nodes: within the bound
    loop = tmp_path / "loop.yaml"
    loop.write_text("train:\n  epochs: 1\nmodel:\n  config_overrides: &x [1, *x]\n", encoding="utf-8")
    with pytest.raises(PeftkitError, match=r"loop\.yaml line 4: invalid YAML \(an alias refers to a node that "
                                           r"contains it"):
        load_recipe(loop)
    assert parse_override("train.seed=&a [*a]") == ("train.seed", "&a [*a]")  # not a structure: validation judges it
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(bomb.read_text(), encoding="utf-8")
    (row,) = find_runs(tmp_path / "runs")
    assert row.status == "broken" and "recipe.yaml unreadable" in row.note and "aliases expand" in row.note


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("description: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(PeftkitError, match=r"deep\.yaml"):
        load_recipe(path)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"train": {"seed": 2**32}}, "'train.seed': input should be less than or equal to 4294967295"),
    ({"data": {"split_seed": -1}}, "'data.split_seed': input should be greater than or equal to 0"),
    ({"train": {"scheduler": "cosine_with_restarts", "scheduler_options": {"num_cycles": 0}}},
     "'train.scheduler_options.num_cycles': 0.0 is out of range; it must be above 0"),
    ({"train": {"scheduler": "polynomial", "scheduler_options": {"power": -1}}},
     "'train.scheduler_options.power': -1.0 is out of range"),
    ({"train": {"scheduler": "polynomial", "scheduler_options": {"lr_end": 1e-3}}},
     "'train.scheduler_options.lr_end': 0.001 must be below train.learning_rate (0.0005)"),  # the method's default
    ({"data": {"files": {"test": "t.csv"}}}, "'data.files' names test but no train file"),
    ({"model": {"random_init": True, "config_overrides": {"num_attention_heads": 0}}},
     "'model.config_overrides.num_attention_heads': 0 is not a count"),
    ({"model": {"random_init": True, "config_overrides": {"intermediate_size": "big"}}},
     "'model.config_overrides.intermediate_size': 'big' is not a count"),
])
def test_values_that_cannot_work_are_refused_before_anything_loads(raw: dict, expected: str) -> None:
    with pytest.raises(PeftkitError) as info:
        recipe_from_dict(raw, source="my.yaml")
    assert str(info.value) == f"my.yaml: {expected}" or expected in str(info.value)


def test_workers_are_capped_by_the_cores_when_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import peftkit.config.validation as validation

    data = tmp_path / "d.csv"
    data.write_text("text,label\na,x\nb,y\n", encoding="utf-8")
    monkeypatch.setattr(validation.os, "cpu_count", lambda: 2)
    raw = {"data": {"source": str(data)}, "train": {"dataloader_num_workers": 9}}
    with pytest.raises(PeftkitError, match=r"'train.dataloader_num_workers': 9 workers on a machine with 2 CPU "
                                           r"core\(s\); use at most 8"):
        recipe_from_dict(raw)
    assert recipe_from_dict(raw, check_data=False).train.dataloader_num_workers == 9  # a saved run reads back
    assert recipe_from_dict({**raw, "train": {"dataloader_num_workers": 8}}).train.dataloader_num_workers == 8


def test_paths_that_are_directories_say_so(tmp_path: Path) -> None:
    folder = tmp_path / "r.yaml"
    folder.mkdir()
    with pytest.raises(PeftkitError, match=r"recipe file '.*r\.yaml' is a directory, expected a file"):
        load_recipe(folder)
    with pytest.raises(PeftkitError, match=r"'augment.synonyms': '.*' is a directory, expected a file"):
        recipe_from_dict({"augment": {"synonyms": str(tmp_path)}})
