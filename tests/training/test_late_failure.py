"""A failure after the last training step never loses the trained model.

Once training has finished, the checkpoint of its last step is kept (written when the Trainer saved none there)
until the run is saved. Ctrl-C or a failure while the run is evaluated or saved leaves that checkpoint, or a
rescue folder, names it in one line, and `--resume` evaluates and saves it without a single training step.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import peftkit.rundir.save
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.rundir.checkpoints import finished_training, is_complete
from peftkit.rundir.metrics import TIMING_KEYS
from peftkit.training.trainer import PeftkitTrainer

pytestmark = pytest.mark.usefixtures("default_sigint")  # these tests send Ctrl-C to their own process

STEPS = 6
FAST = {"train.max_steps": STEPS, "train.logging_steps": 2}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout and the one `peftkit:` line a failed command prints (stderr for a success)."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 0:
        return code, out, err
    lines = [line for line in err.splitlines() if line.startswith("peftkit: ")]
    assert len(lines) == 1, err[-2000:]
    return code, out, lines[0]


@pytest.fixture
def no_training_step(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records every training step taken (a resumed evaluation must take none)."""
    taken: list[int] = []
    inner = PeftkitTrainer.training_step

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        taken.append(self.state.global_step)
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(PeftkitTrainer, "training_step", training_step)
    return taken


def _ctrl_c_in_the_final_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT, as a terminal sends it, while the test split is evaluated (validation evaluations run on)."""
    inner = PeftkitTrainer.evaluate

    def evaluate(self: Any, *args: Any, metric_key_prefix: str = "eval", **kwargs: Any) -> Any:
        if metric_key_prefix == "test":
            os.kill(os.getpid(), signal.SIGINT)
        return inner(self, *args, metric_key_prefix=metric_key_prefix, **kwargs)

    monkeypatch.setattr(PeftkitTrainer, "evaluate", evaluate)


def _comparable(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    test = {k: v for k, v in metrics["test"].items() if k not in TIMING_KEYS}
    return {"test": test, "loss_history": metrics["loss_history"], "steps": metrics["train"]["steps"],
            "loss": metrics["train"]["loss"]}


def _same_weights(a: Path, b: Path) -> bool:
    left, right = (load_file(str(run / "adapter_model.safetensors")) for run in (a, b))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("checkpoints", [
    pytest.param({"train.save_strategy": "no"}, id="no-checkpoints"),
    pytest.param({"train.save_strategy": "steps", "train.save_steps": 3}, id="trainer-saved-the-last-step"),
    pytest.param({"train.eval_strategy": "steps", "train.eval_steps": 2, "train.save_strategy": "steps",
                  "train.save_steps": 2, "train.early_stopping_patience": 5, "train.max_steps": 8,
                  "train.learning_rate": 5e-2},
                 id="best-model-at-end"),
])
def test_ctrl_c_in_the_final_evaluation_keeps_the_model_and_resume_evaluates_it_without_training(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        no_training_step: list[int], checkpoints: dict[str, Any]) -> None:
    recipe = str(write_recipe({**FAST, **checkpoints}))
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert run_cli(["train", recipe, f"output_dir={reference}"], capsys)[0] == 0
    steps = len(no_training_step)
    if "train.early_stopping_patience" in checkpoints:  # training ends on an earlier, best checkpoint's weights
        last = reference / "checkpoints" / f"checkpoint-{steps}"
        assert json.loads((last / "trainer_state.json").read_text())["best_model_checkpoint"] != str(last)

    with monkeypatch.context() as patch:
        _ctrl_c_in_the_final_evaluation(patch)
        code, _, line = run_cli(["train", recipe, f"output_dir={run}"], capsys)
    final = run / "checkpoints" / f"checkpoint-{steps}"
    assert code == 130
    assert line.startswith(f"peftkit: interrupted: stopped by Ctrl-C after training finished (step {steps})")
    assert f"the trained model is kept in '{final}'" in line and "--resume to evaluate and save it" in line
    assert not (run / "metrics.json").exists() and is_complete(final) and finished_training(final)

    no_training_step.clear()
    code, out, err = run_cli(["train", recipe, f"output_dir={run}", "--resume"], capsys)
    assert code == 0 and f"trained {steps} steps" in out
    assert no_training_step == [], "the resumed run evaluated the kept model and took no training step"
    assert f"training had finished ({final}); evaluating and saving it without training again" in err
    assert _comparable(run) == _comparable(reference)
    assert _same_weights(run, reference), "the resumed run saved the model training ended with"
    kept = sorted(p.name for p in (run / "checkpoints").iterdir()) if (run / "checkpoints").exists() else []
    reference_kept = sorted(p.name for p in (reference / "checkpoints").iterdir()) if checkpoints.get(
        "train.save_strategy") != "no" else []
    assert kept == reference_kept, "a checkpoint written only to keep the model goes once the run is saved"


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_the_save_lets_it_finish_and_a_second_one_aborts_keeping_the_model(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        no_training_step: list[int], presses: int) -> None:
    recipe = str(write_recipe(FAST))
    run = tmp_path / "run"
    real = peftkit.rundir.save.write_model_card

    def pressed(*args: Any) -> None:  # Ctrl-C while the staged run is written, before anything is moved in
        for _ in range(presses):
            os.kill(os.getpid(), signal.SIGINT)
        real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(peftkit.rundir.save, "write_model_card", pressed)
        code = main(["train", recipe])
    err = capsys.readouterr().err
    assert "peftkit: Ctrl-C: finishing the save of the trained run first (Ctrl-C again aborts it)" in err
    assert "Traceback" not in err
    if presses == 1:
        assert code == 0 and (run / "metrics.json").is_file() and not (run / "checkpoints").exists()
        assert run_cli(["eval", str(run)], capsys)[0] == 0
        return
    final = run / "checkpoints" / f"checkpoint-{STEPS}"
    assert code == 130 and f"the trained model is kept in '{final}'" in err.splitlines()[-1]
    assert not (run / "metrics.json").exists() and not (run / ".staging").exists()
    no_training_step.clear()
    assert run_cli(["train", recipe, "--resume"], capsys)[0] == 0 and no_training_step == []
    assert (run / "metrics.json").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the save put back the previous handler"


def test_a_failing_evaluation_is_one_line_naming_the_kept_model(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        no_training_step: list[int]) -> None:
    recipe = str(write_recipe(FAST))
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr("peftkit.heads.base.Head.samples", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        code, _, line = run_cli(["train", recipe], capsys)
    assert code == 2
    assert line.startswith("peftkit: error: the final test evaluation failed (RuntimeError: boom); ")
    assert f"the trained model is kept in '{run / 'checkpoints' / f'checkpoint-{STEPS}'}'" in line
    no_training_step.clear()
    code, out, _ = run_cli(["train", recipe, "--resume"], capsys)
    assert code == 0 and no_training_step == [] and f"trained {STEPS} steps" in out
    assert not (run / "checkpoints").exists()
    code, out, _ = run_cli(["predict", str(run), "a wonderful film"], capsys)
    assert code == 0 and out.split()[0] in ("positive", "negative")


def test_out_of_gpu_memory_in_the_final_evaluation_names_the_eval_batch_and_the_kept_model(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftkit.training.guards import is_out_of_memory
    from peftkit.training.run import train

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(PeftkitTrainer, "evaluate", out_of_memory)
    with pytest.raises(PeftkitError) as failed:
        train(write_recipe({**FAST, "train.eval_batch_size": 64}))
    assert is_out_of_memory(failed.value), "benchmarks label it out of memory"
    assert str(failed.value).startswith("out of GPU memory in the final test evaluation with "
                                        "train.eval_batch_size=64; lower it; the trained model is kept in ")


def test_a_card_that_cannot_be_written_anywhere_keeps_the_model_for_resume(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        no_training_step: list[int]) -> None:
    """Not a full disk: a bug in the card fails the save into output_dir and into the rescue folder alike."""
    recipe = str(write_recipe(FAST))
    run, spare = tmp_path / "run", tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spare))

    def broken(*args: Any) -> None:
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    with monkeypatch.context() as patch:
        patch.setattr(peftkit.rundir.save, "write_model_card", broken)
        code, _, line = run_cli(["train", recipe], capsys)
    final = run / "checkpoints" / f"checkpoint-{STEPS}"
    assert code == 2
    assert line.startswith(f"peftkit: error: saving the run to '{run}' failed: UnicodeEncodeError: ")
    assert f"its last checkpoint '{final}' is kept" in line
    assert "--resume to evaluate and save it without training again" in line
    assert not (run / ".staging").exists() and not (run / "metrics.json").exists()
    assert list(spare.iterdir()) == [], "the failed rescue folder was removed"
    no_training_step.clear()
    assert run_cli(["train", recipe, "--resume"], capsys)[0] == 0 and no_training_step == []
    assert run_cli(["eval", str(run)], capsys)[0] == 0


def test_a_save_refused_with_a_peftkit_error_keeps_its_message_and_rescues_the_run(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run, spare = tmp_path / "run", tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spare))
    real = peftkit.rundir.save.write_model_card

    def refused(directory: Path, *args: Any) -> None:
        if Path(directory).resolve().is_relative_to(run.resolve()):
            raise PeftkitError(f"'{run}' changed hands while the run trained")
        real(directory, *args)

    monkeypatch.setattr(peftkit.rundir.save, "write_model_card", refused)
    code, _, line = run_cli(["train", str(write_recipe(FAST))], capsys)
    rescued = next(spare.glob("peftkit-rescued-run-*"))
    assert code == 2
    assert line.startswith(f"peftkit: error: '{run}' changed hands while the run trained; the trained run was "
                           f"saved to '{rescued}' instead")
    assert run_cli(["eval", str(rescued)], capsys)[0] == 0


def test_keeping_the_model_on_a_full_disk_still_saves_the_run(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PeftkitTrainer, "save_model", full)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(write_recipe(FAST))], capsys)
    assert code == 0, err
    assert (run / "metrics.json").is_file() and not (run / "checkpoints").exists(), "no staging left behind"


def test_ctrl_c_when_nothing_could_be_kept_says_so_and_resume_says_it_starts_over(
        write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    recipe = str(write_recipe(FAST))
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(PeftkitTrainer, "save_model", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "")))
        _ctrl_c_in_the_final_evaluation(patch)
        code, _, line = run_cli(["train", recipe], capsys)
    assert code == 130 and "the trained model could not be kept as a checkpoint either (a full disk?)" in line
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir()), "no staging left"
    code, out, err = run_cli(["train", recipe, "--resume"], capsys)
    assert code == 0 and f"trained {STEPS} steps" in out
    assert f"peftkit: no complete checkpoint in '{run}' to resume from; training from the start" in err


def test_a_data_file_whose_name_is_not_utf8_trains_saves_and_evaluates(
        write_recipe, sentiment_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / os.fsdecode(b"data-\xff.csv")  # bytes no encoding decodes; Linux takes any
    data.write_bytes(sentiment_csv.read_bytes())
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(write_recipe({**FAST, "data.source": str(data)}))], capsys)
    assert code == 0, err
    card = (run / "README.md").read_text(encoding="utf-8")
    assert f"`{tmp_path}/data-\\xff.csv`" in card, "the undecodable byte is escaped as `ls -b` shows it"
    assert run_cli(["eval", str(run)], capsys)[0] == 0


def test_a_corrupt_run_state_of_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "peftkit_state.json").write_text('{"loss_sum": 1.5, "fini', encoding="utf-8")
    with pytest.raises(PeftkitError, match=r"checkpoint file '.*peftkit_state.json' is unreadable .* delete the "):
        finished_training(checkpoint)
    (checkpoint / "peftkit_state.json").write_text('{"finished": {}}', encoding="utf-8")
    with pytest.raises(PeftkitError, match="has no number 'loss_sum'"):
        finished_training(checkpoint)
    (checkpoint / "peftkit_state.json").write_text('{"loss_sum": 1.5}', encoding="utf-8")
    assert finished_training(checkpoint) is None, "a checkpoint written while training is resumed by training"
