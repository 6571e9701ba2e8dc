"""The hub recipes for real model sizes: offline validate / estimate from the shipped configs, and each one run
through the whole pipeline on a random-init model of the same architecture shrunk to tiny size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from peftkit.config.load import load_recipe
from peftkit.data import cache, loading
from peftkit.hardware import auto
from peftkit.hardware import device as devices
from peftkit.hardware.env import fits
from peftkit.model.params import parameter_count
from peftkit.model.shipped import shipped_config

HUB_RECIPES = ("qwen2.5-7b-qlora-sft", "qwen2.5-1.5b-lora-sft", "roberta-base-lora-sst2",
               "bert-base-chinese-lora-thucnews")
#: recipe → (catalogue model lending its tokenizer, architecture-specific config overrides)
TINY = {
    "qwen2.5-7b-qlora-sft": ("smollm2-135m", {"num_key_value_heads": 2}),
    "qwen2.5-1.5b-lora-sft": ("smollm2-135m", {"num_key_value_heads": 2}),
    "roberta-base-lora-sst2": ("minilm-l6", {}),
    "bert-base-chinese-lora-thucnews": ("minilm-l6", {}),
}
GiB = 2**30


@pytest.mark.parametrize("name", HUB_RECIPES)
def test_hub_recipe_validates_and_estimates_offline(name: str) -> None:
    recipe = load_recipe(name)
    assert shipped_config(recipe.model.name) is not None, "the base's config ships inside peftkit"
    rows, source = fits(recipe, devices.reference_gpus())
    assert "upper bound" in source  # no data offline: data.max_length stands in
    by_memory = {row.device.memory: row for row in rows}
    assert set(by_memory) == {24 * GiB, 80 * GiB}
    for row in rows:
        assert row.recipe.train.precision == "bf16" and auto.is_resolved(row.recipe)
        assert row.estimate.sequence_length == recipe.data.max_length
    # the 80 GB card never needs checkpointing where the 24 GB one does not
    big, small = by_memory[80 * GiB].recipe.train, by_memory[24 * GiB].recipe.train
    assert big.gradient_checkpointing <= small.gradient_checkpointing
    total = parameter_count(recipe.model)
    expected = {"qwen2.5-7b-qlora-sft": 7.6e9, "qwen2.5-1.5b-lora-sft": 1.5e9, "roberta-base-lora-sst2": 125e6,
                "bert-base-chinese-lora-thucnews": 102e6}[name]
    assert 0.9 * expected < total < 1.1 * expected
    if name == "qwen2.5-7b-qlora-sft":
        assert by_memory[24 * GiB].fits and by_memory[24 * GiB].recipe.train.optim == "paged_adamw_8bit"


def _hub_rows(name: str) -> DatasetDict:
    """A few rows shaped like the hub data set the recipe names (same columns, features and splits)."""
    if name.startswith("qwen"):  # databricks/databricks-dolly-15k: one train split
        rows = [{"instruction": f"Name a colour number {i}.", "context": "", "response": ["red", "blue"][i % 2],
                 "category": "open_qa"} for i in range(40)]
        return DatasetDict({"train": Dataset.from_list(rows)})
    if name.startswith("roberta"):  # nyu-mll/glue sst2: the test split's labels are hidden (-1)
        features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                             "idx": Value("int32")})

        def split(n: int, hidden: bool = False) -> Dataset:
            return Dataset.from_dict({"sentence": [["a dull film", "a great film"][i % 2] for i in range(n)],
                                      "label": [-1 if hidden else i % 2 for i in range(n)],
                                      "idx": list(range(n))}, features=features)

        return DatasetDict({"train": split(40), "validation": split(12), "test": split(10, hidden=True)})
    labels = ["education", "entertainment", "fashion", "finance", "game", "politic", "society", "sport", "stock",
              "technology"]
    features = Features({"text": Value("string"), "label": ClassLabel(names=labels)})
    return DatasetDict({part: Dataset.from_dict({"text": [f"新闻 {i} 号" for i in range(n)],
                                                 "label": [i % 10 for i in range(n)]}, features=features)
                        for part, n in (("train", 40), ("validation", 10), ("test", 10))})


def _tiny_base(name: str, tmp_path: Path) -> tuple[Path, dict]:
    """A model directory with the recipe base's shipped config.json and a catalogue tokenizer."""
    from transformers import AutoTokenizer

    recipe = load_recipe(name)
    lender, extra = TINY[name]
    directory = tmp_path / "base"
    AutoTokenizer.from_pretrained(cache.fetch_model(lender)).save_pretrained(directory)
    shutil.copy(shipped_config(recipe.model.name) / "config.json", directory / "config.json")
    vocab = len(AutoTokenizer.from_pretrained(directory))
    overrides = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                 "vocab_size": vocab, **extra}
    return directory, overrides


@pytest.mark.parametrize("name", HUB_RECIPES)
def test_hub_recipe_runs_at_tiny_size(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftkit.rundir.inference import predict
    from peftkit.training.run import train

    recipe = load_recipe(name)
    calls = []

    def hub(path: str, config: str | None = None) -> DatasetDict:  # stands in for the download only
        calls.append((path, config))
        return _hub_rows(name)

    monkeypatch.setattr("datasets.load_dataset", hub)
    directory, overrides = _tiny_base(name, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    result = train(name, **{
        "model.name": str(directory), "model.random_init": True, "model.config_overrides": overrides,
        "data.max_length": 32, "data.test_size": 8, "data.validation_size": 4,
        "train.max_steps": 2, "train.batch_size": 4, "train.eval_batch_size": 4, "train.eval_strategy": "no",
        "train.save_strategy": "no", "train.early_stopping_patience": None, "train.logging_steps": 1,
        "output_dir": str(tmp_path / "run"),
        **({"task.max_new_tokens": 2, "task.test_samples": 1} if recipe.task.head == "causal_lm" else {}),
    })
    assert calls == [(recipe.data.source, recipe.data.hub_config)]
    assert config["model_type"] in {"qwen2", "roberta", "bert"}
    metrics = result.metrics
    assert metrics["train"]["steps"] == 2
    assert metrics["parameters"]["trainable"] < metrics["parameters"]["total"]
    if recipe.task.head == "causal_lm":
        assert metrics["test"]["token_loss"] > 0
    else:
        assert 0 <= metrics["test"]["accuracy"] <= 1
    if name.startswith("roberta"):  # GLUE's validation split is the test split; its hidden test labels unused
        assert metrics["test_examples"] == 12
        label = predict(result.output_dir, ["a great film"])[0]["label"]
        assert label in ("negative", "positive")
    saved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["precision"] == auto.precision(devices.cpu(), load_recipe(name))  # bf16 on a bf16 CPU
    assert "auto" not in (saved["train"]["optim"], saved["train"]["gradient_checkpointing"],
                          saved["quantization"]["compute_dtype"], saved["model"]["attn_implementation"])


def test_source_splits_naming_a_missing_split_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from peftkit.errors import PeftkitError

    monkeypatch.setattr("datasets.load_dataset", lambda path, config=None: _hub_rows("roberta-base-lora-sst2"))
    recipe = load_recipe("roberta-base-lora-sst2", ["data.source_splits={test: dev}"])
    with pytest.raises(PeftkitError, match=r"^'data.source_splits.test': hub data set 'nyu-mll/glue' has no 'dev' "
                                           r"split \(has train, validation, test\)$"):
        loading.load_source(recipe.data)
    loaded = loading.load_source(load_recipe("roberta-base-lora-sst2").data)
    assert list(loaded) == ["train", "test"] and len(loaded["test"]) == 12  # GLUE's validation, labelled
