"""Every file a run folder holds is untrusted input: a damaged one is one error line naming it, in every verb;
`peftkit runs` lists the folder, flagged, whatever its state."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import save_file
from testkit import make_tiny, tiny_recipe, write_head_recipe, write_recipe_file

import peftkit
from peftkit.cli import main

Damage = Callable[[Path], None]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny run per kind of saved model: a LoRA adapter, a head-only probe, a fully fine-tuned model."""
    tiny = make_tiny(tmp_path_factory.mktemp("tiny"))
    root = tmp_path_factory.mktemp("trained")
    runs = {"lora": peftkit.train(write_head_recipe(tiny, "sentiment", root / "lora")).output_dir}
    for method in ("head_only", "full"):
        recipe = tiny_recipe(tiny["bert"], tiny["text"], {"method": {"name": method}, "train.max_steps": 2,
                                                          "output_dir": str(root / method)})
        runs[method] = peftkit.train(write_recipe_file(root / f"{method}.yaml", recipe)).output_dir
    return {k: Path(v) for k, v in runs.items()}


def write(name: str, content: bytes) -> Damage:
    return lambda run: (run / name).write_bytes(content)


def truncate(name: str) -> Damage:
    return lambda run: (run / name).write_bytes((run / name).read_bytes()[: (run / name).stat().st_size // 2])


def remove(name: str) -> Damage:
    return lambda run: (run / name).unlink()


def no_tensors(name: str) -> Damage:
    return lambda run: save_file({}, str(run / name))


def add_label(run: Path) -> None:
    recipe = run / "recipe.yaml"
    text = recipe.read_text(encoding="utf-8")
    assert "  - positive\n" in text
    recipe.write_text(text.replace("  - positive\n", "  - positive\n  - neutral\n", 1), encoding="utf-8")


# (case id, run kind, damage, the file the error names, what the error says about it)
CASES = [
    ("recipe-empty", "lora", write("recipe.yaml", b""), "recipe.yaml", "is empty"),
    ("recipe-garbage", "lora", write("recipe.yaml", b"\xff\xfe\x00\x9c garbage"), "recipe.yaml", "not UTF-8"),
    ("recipe-list", "lora", write("recipe.yaml", b"- model\n- method\n"), "recipe.yaml", "must be a mapping"),
    ("recipe-no-model", "lora", write("recipe.yaml", b"task:\n  head: sentiment\n"), "recipe.yaml",
     "has no model.name"),
    ("recipe-labels-lora", "lora", add_label, "recipe.yaml", "lists 3 labels (task.labels) but the head saved in "
     "adapter_model.safetensors has 2 outputs"),
    ("recipe-labels-head-only", "head_only", add_label, "recipe.yaml", "lists 3 labels (task.labels) but the head "
     "saved in head_model.safetensors has 2 outputs"),
    ("recipe-labels-full", "full", add_label, "recipe.yaml", "lists 3 labels (task.labels) but the head saved in "
     "model.safetensors has 2 outputs"),
    ("metrics-garbage", "lora", write("metrics.json", b"\xff\x00garbage"), "metrics.json", "is not UTF-8 text"),
    ("metrics-truncated", "lora", truncate("metrics.json"), "metrics.json", "is not valid JSON"),
    ("metrics-list", "lora", write("metrics.json", b"[1, 2]"), "metrics.json", "holds a list, expected a JSON object"),
    ("metrics-test-list", "lora", write("metrics.json", b'{"test": [1]}'), "metrics.json",
     "holds a list as 'test', expected an object"),
    ("adapter-garbage", "lora", write("adapter_model.safetensors", b"\x00" * 64), "adapter_model.safetensors",
     "is not a safetensors file (header unreadable"),
    ("adapter-truncated", "lora", truncate("adapter_model.safetensors"), "adapter_model.safetensors",
     "is not a safetensors file (header unreadable"),
    ("adapter-empty", "lora", write("adapter_model.safetensors", b""), "adapter_model.safetensors",
     "is not a safetensors file"),
    ("adapter-no-tensors", "lora", no_tensors("adapter_model.safetensors"), "adapter_model.safetensors",
     "holds no tensors"),
    ("adapter-missing", "lora", remove("adapter_model.safetensors"), "adapter_model.safetensors", "is missing"),
    ("adapter-config-garbage", "lora", write("adapter_config.json", b"\xffgarbage"), "adapter_config.json",
     "is not UTF-8 text"),
    ("adapter-config-list", "lora", write("adapter_config.json", b"[]"), "adapter_config.json", "holds a list"),
    ("adapter-config-empty", "lora", write("adapter_config.json", b"{}"), "adapter_config.json",
     "holds peft_type None but recipe.yaml says method lora"),
    ("adapter-config-bad-value", "lora", write("adapter_config.json", b'{"peft_type": "LORA", "r": "x"}'),
     "adapter_config.json", "holds r: 'x', expected a number"),
    ("adapter-config-missing", "lora", remove("adapter_config.json"), "adapter_config.json", "is missing"),
    ("tokenizer-garbage", "lora", write("tokenizer.json", b"\xff garbage"), "tokenizer.json", "is not UTF-8 text"),
    ("tokenizer-truncated", "lora", truncate("tokenizer.json"), "tokenizer.json", "is not valid JSON"),
    ("tokenizer-wrong-shape", "lora", write("tokenizer.json", b"{}"), "tokenizer.json",
     "could not be loaded as its tokenizer"),
    ("tokenizer-config-list", "lora", write("tokenizer_config.json", b"[1]"), "tokenizer_config.json",
     "holds a list"),
    ("head-weights-garbage", "head_only", write("head_model.safetensors", b"\x00" * 64), "head_model.safetensors",
     "is not a safetensors file"),
    ("head-weights-no-tensors", "head_only", no_tensors("head_model.safetensors"), "head_model.safetensors",
     "holds no tensors"),
    ("head-weights-missing", "head_only", remove("head_model.safetensors"), "head_model.safetensors", "is missing"),
    ("model-weights-truncated", "full", truncate("model.safetensors"), "model.safetensors",
     "is not a safetensors file"),
    ("model-config-list", "full", write("config.json", b"[]"), "config.json", "holds a list"),
]
#: Damage `peftkit runs` does not look for (it reads no weights' contents, builds no model).
NOT_IN_TABLE = {"recipe-labels-lora", "recipe-labels-head-only", "recipe-labels-full", "adapter-config-empty",
                "adapter-config-bad-value", "adapter-config-missing", "tokenizer-wrong-shape", "adapter-missing",
                "head-weights-missing"}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `peftkit ARGV` run in this process (a traceback fails the test)."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("peftkit")]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("peftkit: error: "), err[-1500:]
    return lines[0]


@pytest.mark.parametrize(("case", "kind", "damage", "file", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_damaged_file_is_one_line_naming_it_in_every_verb(case: str, kind: str, damage: Damage, file: str,
                                                            says: str, trained: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "runs" / case
    shutil.copytree(trained[kind], run)
    damage(run)
    partner = tmp_path / "partner"
    shutil.copytree(trained["lora"], partner)
    if case == "recipe-labels-lora":  # fuse refuses runs whose labels differ, so both say 3 labels here
        add_label(partner)
    before = snapshot(tmp_path / "runs")

    verbs = {
        "eval": ["eval", str(run)],
        "predict": ["predict", str(run), "a wonderful film"],
        "export": ["export", str(run), "--out", str(tmp_path / "export")],
        "fuse": ["fuse", str(run), str(partner), "--out", str(tmp_path / "fused")],  # the first run's tokenizer
    }
    for verb, argv in verbs.items():
        code, _, err = run_cli(argv, capsys)
        line = one_error_line(err)
        assert code == 2, (verb, err)
        assert file in line and says in line, (verb, line)
    assert not (tmp_path / "export").exists() and not (tmp_path / "fused").exists()
    assert snapshot(tmp_path / "runs") == before  # nothing peftkit refused to read was changed

    code, out, _ = run_cli(["runs", str(tmp_path / "runs"), "--json"], capsys)
    assert code == 0
    (row,) = json.loads(out)
    if case not in NOT_IN_TABLE:
        assert row["status"] == "broken" and file in row["note"], row


def test_fuse_with_both_runs_labels_edited_alike_names_recipe_yaml(trained: dict[str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        shutil.copytree(trained["lora"], run)
        add_label(run)
    code, _, err = run_cli(["fuse", *map(str, runs), "--out", str(tmp_path / "fused")], capsys)
    assert code == 2
    assert "recipe.yaml lists 3 labels (task.labels) but the head saved in adapter_model.safetensors has 2 " \
           "outputs" in one_error_line(err)
    assert not (tmp_path / "fused").exists()


def test_saved_nan_metrics_do_not_stop_eval(trained: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """A run that diverged writes NaN itself: its metrics are read; a saved figure that is not a number is not shown."""
    run = tmp_path / "run"
    shutil.copytree(trained["lora"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"]["accuracy"], metrics["test"]["loss"] = "high", float("nan")
    (run / "metrics.json").write_text(json.dumps(metrics))
    code, out, _ = run_cli(["eval", str(run)], capsys)
    assert code == 0 and "accuracy" in out and "saved at training time" not in out


def strict_json(text: str) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_runs_lists_every_folder_with_odd_figures(trained: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "runs"
    metrics = json.loads((trained["lora"] / "metrics.json").read_text())
    figures = {
        "nan": '{"test": {"accuracy": NaN}, "parameters": {"trainable_percent": NaN}, "train": {"seconds": Infinity}}',
        "huge": '{"test": {"accuracy": 1e999}, "parameters": {"trainable_percent": -Infinity}, '
                '"train": {"seconds": 1' + "0" * 400 + ', "steps": NaN}}',
        "strings": '{"test": {"accuracy": "high"}, "parameters": {"trainable_percent": [1]}, '
                   '"train": {"seconds": true}}',
        "sections": '{"test": "all good", "parameters": [1], "train": 3}',
        "fine": json.dumps(metrics),
    }
    for name, text in figures.items():
        shutil.copytree(trained["lora"], root / name)
        (root / name / "metrics.json").write_text(text)

    code, out, _ = run_cli(["runs", str(root), "--json", "--sort", "metric"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in strict_json(out)}
    assert next(iter(rows)) == "fine" and rows["fine"]["note"] == ""  # sorting still works, the good run first
    for name in ("nan", "huge"):  # a diverged run writes NaN itself: finished, its figures blank and named
        row = rows[name]
        assert row["status"] == "finished" and row["metric_value"] is None and row["trainable_percent"] is None
        assert row["train_seconds"] is None and "test.accuracy is" in row["note"]
        assert "not a finite number" in row["note"]
    assert rows["huge"]["steps"] is None and "train.seconds" in rows["huge"]["note"]
    strings = rows["strings"]
    assert strings["status"] == "broken" and strings["metric_value"] is None
    assert "test.accuracy is a string, expected a number" in strings["note"]
    assert "parameters.trainable_percent is a list" in strings["note"]
    assert "train.seconds is true/false" in strings["note"]
    assert rows["sections"]["status"] == "broken"
    assert "test is a string, expected an object" in rows["sections"]["note"]

    code, out, _ = run_cli(["runs", str(root), "--sort", "trainable"], capsys)
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines[1:]] == ["fine", "huge", "nan", "sections", "strings"]
    assert "not a finite number" in next(line for line in lines if line.startswith("nan "))

    code, out, _ = run_cli(["runs", str(root), "--csv", "--sort", "time"], capsys)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 5 and table[0]["name"] == "fine"
    assert {r["name"]: r["train_seconds"] for r in table}["nan"] == ""
