"""What a person sees: the training header, labelled bars and the aligned log table; `--quiet` / `--json`; `eval`
printing only its table and leaving the run as it was; no library noise from the CLI or the Python API."""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import TrainerCallback

import peftkit
from peftkit.cli import main
from peftkit.hardware import device as devices

#: A log table row: step, then the training loss and learning rate or the validation loss and metric, as numbers.
TRAIN_ROW = re.compile(r"^ +\d+ +\d+\.\d{4} +\d\.\d{3}e-\d\d +[\d,.]* +[\d:]*$")
EVAL_ROW = re.compile(r"^ +\d+ {20,}\d+\.\d{4} +\d+\.\d{4} +[\d,.]* +[\d:]*$")


@pytest.fixture(autouse=True)
def _bars_back() -> Iterator[None]:
    """`--quiet` / `--json` / `predict` turn the library bars off for their process (earlier tests' too); each test
    here starts with them on and gives them back to the tests after it."""
    import datasets
    import transformers

    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()
    yield
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_train_prints_a_header_labelled_bars_and_an_aligned_log_table(capfd, write_recipe, tmp_path: Path,
                                                                      tiny_bert: Path) -> None:
    recipe = write_recipe({"train.eval_strategy": "steps", "train.eval_steps": 20})
    assert main(["train", str(recipe)]) == 0
    out, err = capfd.readouterr()
    header = out[:out.index("   step")]
    assert header.startswith("peftkit train tiny — tiny test recipe\n")
    assert f"model      {tiny_bert} (" in header and " parameters)" in header
    assert re.search(r"method +lora: [\d,]+ trainable parameters \(\d+\.\d\d %\)", header)
    assert "280 train / 40 validation / 80 test rows" in header
    precision = "bf16" if devices.current().cpu_bf16 else "fp32"  # LoRA: bf16 where the CPU has it natively
    assert f"device     {devices.current().label}, precision {precision}\n" in header
    assert f"  auto       train.precision={precision}, " in header
    assert f"output     {tmp_path / 'run'}" in header
    assert "steps      60 (logging every 5)" in header
    table = out[len(header):out.index("test metrics")].splitlines()
    assert table[0].split() == ["step", "loss", "learning", "rate", "eval", "loss", "eval", "accuracy", "samples/s",
                                "ETA"]
    assert sum(bool(TRAIN_ROW.match(line)) for line in table) == 12  # every 5 of 60 steps
    assert sum(bool(EVAL_ROW.match(line)) for line in table) == 3  # every 20
    assert len(table) == 16 and len({len(line) for line in table}) == 1  # aligned: one width
    assert "{'" not in out and "'loss'" not in out and "train_runtime" not in out
    assert "trained 60 steps" in out and f"run saved to {tmp_path / 'run'}" in out  # the closing summary as before
    for label in ("tokenizing train:", "tokenizing validation:", "tokenizing test:", "training:", "evaluating test:"):
        assert label in err
    assert "\x1b" not in out + err and "LOAD REPORT" not in out + err and "FutureWarning" not in err


def test_train_json_prints_one_json_object_and_nothing_else(capfd, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe({"train.max_steps": 10})
    assert main(["train", str(recipe), "--json"]) == 0
    out, err = capfd.readouterr()
    metrics = json.loads(out)
    assert metrics["output_dir"] == str(tmp_path / "run") and metrics["train"]["steps"] == 10
    assert 0 <= metrics["test"]["accuracy"] <= 1 and metrics["parameters"]["trainable"] > 0
    assert "%|" not in err and "step" not in err  # no bars, no table


def test_train_quiet_prints_only_the_summary(capfd, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe({"train.max_steps": 10})
    assert main(["train", str(recipe), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("test metrics (80 examples):\n")
    assert "peftkit train" not in out and "learning rate" not in out
    assert out.rstrip().endswith(f"run saved to {tmp_path / 'run'}")
    assert "%|" not in err and "\x1b" not in err


def test_quiet_and_json_together_is_a_usage_error(capsys, write_recipe) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", str(write_recipe()), "--quiet", "--json"])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_eval_prints_only_its_table_with_a_bar_and_leaves_the_run_unchanged(capfd, write_recipe,
                                                                            tmp_path: Path) -> None:
    recipe = write_recipe({"train.max_steps": 10})
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--quiet"]) == 0
    capfd.readouterr()
    before = _snapshot(run)
    assert main(["eval", str(run)]) == 0
    out, err = capfd.readouterr()
    assert _snapshot(run) == before  # no eval/ folder the manifest does not list
    assert out.startswith(f"test metrics of {run}:\n")
    assert "{" not in out and "test_model_preparation_time" not in out and "runtime" not in out
    assert "evaluating test:" in err


def test_predict_and_estimate_show_no_progress_bars(capfd, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe({"train.max_steps": 5})
    assert main(["train", str(recipe), "--quiet"]) == 0
    capfd.readouterr()
    assert main(["predict", str(tmp_path / "run"), "a superb story"]) == 0
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 1 and "%|" not in err
    assert main(["estimate", str(recipe)]) == 0
    out, err = capfd.readouterr()
    assert "predicted peak" in out and "%|" not in err


class _Records(logging.Handler):
    """The messages of the records it handles."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _RealWarning(TrainerCallback):
    """Warns once, as a library with something to say would."""

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        warnings.warn("a real warning", UserWarning, stacklevel=1)


def test_python_api_shows_no_load_report_or_renamed_argument_warnings(capfd, write_recipe) -> None:
    """Even with transformers at its default verbosity and the caller's warning filters reset (as pytest or a
    notebook may do); a real warning still reaches the caller."""
    import transformers

    recipe = write_recipe({"train.max_steps": 5, "train.gradient_checkpointing": True})
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    logged = _Records()
    logging.getLogger("transformers").addHandler(logged)  # what transformers' own handler beside it prints
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            result = peftkit.train(recipe, overwrite=True, callbacks=[_RealWarning()])
    finally:
        transformers.logging.set_verbosity(level)
        logging.getLogger("transformers").removeHandler(logged)
    out, err = capfd.readouterr()
    assert result.metrics["train"]["steps"] == 5
    assert logged.messages and not [m for m in logged.messages if "LOAD REPORT" in m], logged.messages
    assert "LOAD REPORT" not in out + err and "\x1b" not in out + err
    messages = [str(w.message) for w in seen]
    assert not [m for m in messages if "checkpointing" in m], messages
    assert "a real warning" in messages
    assert "peftkit train tiny" in out and "learning rate" in out  # the API shows the same header and table
