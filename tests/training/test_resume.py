"""Resume and crash safety: SIGKILL at a random step, SIGKILL mid-save, Ctrl-C, NaN loss, best-checkpoint rotation.

The SIGKILL tests train in subprocesses started through a small driver that can pause the run at a chosen
step (or inside a checkpoint save) so the test kills it exactly there; Ctrl-C is sent to the test's own process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.rundir.atomic import replace_dir, write_text
from peftkit.rundir.checkpoints import is_complete, last_checkpoint, resume_point
from peftkit.training.checkpoints import AtomicCheckpoints
from peftkit.training.trainer import PeftkitTrainer

pytestmark = pytest.mark.usefixtures("default_sigint")  # these tests send Ctrl-C to their own process

DRIVER = '''
import os, signal, sys, time
from pathlib import Path
from transformers import Trainer

mode, step, marker = os.environ["DRIVER_MODE"], int(os.environ["DRIVER_STEP"]), Path(os.environ["DRIVER_MARKER"])

def pause():
    marker.write_text("paused")
    time.sleep(600)

# step: pause before the optimizer step `step` + 1; save: inside the save of checkpoint-`step`, after the weights
# and the optimizer are written
name = {"step": "training_step", "save": "_save_rng_state"}.get(mode)
if name:
    inner = getattr(Trainer, name)
    def paused(self, *a, **k):
        if self.state.global_step == step:
            pause()
        return inner(self, *a, **k)
    setattr(Trainer, name, paused)

from peftkit.cli import main
sys.exit(main(sys.argv[1:]))
'''

MAX_STEPS, SAVE_STEPS = 12, 4
RESUMABLE = {
    "train.max_steps": MAX_STEPS, "train.batch_size": 8, "train.save_strategy": "steps",
    "train.save_steps": SAVE_STEPS, "train.logging_steps": 1, "data.max_train_samples": 40,
    "train.save_total_limit": 2, "method.dropout": 0.1,
}


def _driver(tmp_path: Path) -> Path:
    path = tmp_path / "driver.py"
    path.write_text(DRIVER, encoding="utf-8")
    return path


def _start(tmp_path: Path, args: list[str], mode: str = "none", step: int = -1) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / f"marker-{mode}-{step}-{time.monotonic_ns()}"
    env = {**os.environ, "DRIVER_MODE": mode, "DRIVER_STEP": str(step), "DRIVER_MARKER": str(marker),
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(_driver(tmp_path)), *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, marker


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def _kill_when_paused(process: subprocess.Popen, marker: Path) -> None:
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never reached the step to kill it at"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter_model.safetensors"))


def _comparable(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    return {"test": {k: v for k, v in metrics["test"].items() if k not in ("runtime", "samples_per_second",
                                                                         "steps_per_second")},
            "loss_history": metrics["loss_history"], "steps": metrics["train"]["steps"],
            "loss": metrics["train"]["loss"]}


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(write_recipe, tmp_path: Path) -> None:
    recipe = str(write_recipe(RESUMABLE))
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference, _ = _start(tmp_path, ["train", recipe, f"output_dir={full}"])
    kill_at = random.Random().randint(SAVE_STEPS + 1, MAX_STEPS - 1)
    process, marker = _start(tmp_path, ["train", recipe, f"output_dir={killed}"], "step", kill_at)
    _kill_when_paused(process, marker)
    assert _finish(reference)[0] == 0

    assert not (killed / "metrics.json").exists(), "a killed run must not look finished"
    kept = last_checkpoint(killed / "checkpoints")
    assert kept is not None and kept.name == f"checkpoint-{kill_at // SAVE_STEPS * SAVE_STEPS}"
    code, out, err = _finish(_start(tmp_path, ["train", recipe, f"output_dir={killed}", "--resume"])[0])
    assert code == 0, err[-2000:]
    assert f"trained {MAX_STEPS} steps" in out

    assert _comparable(killed) == _comparable(full), f"killed at step {kill_at}"
    a, b = _weights(full), _weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), f"adapter differs after a kill at step {kill_at}"


@pytest.mark.slow
def test_sigkill_during_a_save_keeps_the_previous_checkpoint_loadable(write_recipe, tmp_path: Path) -> None:
    run = tmp_path / "run"
    recipe = str(write_recipe({**RESUMABLE, "output_dir": str(run)}))
    process, marker = _start(tmp_path, ["train", recipe], "save", 2 * SAVE_STEPS)
    _kill_when_paused(process, marker)

    checkpoints = run / "checkpoints"
    staged = checkpoints / f".staging-checkpoint-{2 * SAVE_STEPS}"
    assert staged.is_dir(), "the interrupted save was staged beside the checkpoints"
    assert not (checkpoints / f"checkpoint-{2 * SAVE_STEPS}").exists(), "no half-written checkpoint in place"
    previous = checkpoints / f"checkpoint-{SAVE_STEPS}"
    assert last_checkpoint(checkpoints) == previous and is_complete(previous)
    state = json.loads((previous / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == SAVE_STEPS
    assert any(k.startswith("base_model") for k in load_file(str(previous / "adapter_model.safetensors")))

    code, out, err = _finish(_start(tmp_path, ["train", recipe, "--resume"])[0])
    assert code == 0, err[-2000:]
    assert f"trained {MAX_STEPS} steps" in out
    assert not staged.exists(), "the resumed run re-saved that step and cleared the leftover"
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == MAX_STEPS


def test_ctrl_c_finishes_the_step_saves_and_tells_how_to_resume(
    write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    recipe = str(write_recipe({**RESUMABLE, "output_dir": str(run), "train.save_strategy": "no"}))
    inner, sent = PeftkitTrainer.training_step, []

    def training_step(self, *args, **kwargs):  # Ctrl-C while step 6 runs, as a terminal sends it
        if self.state.global_step == 5 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(PeftkitTrainer, "training_step", training_step)
    assert main(["train", recipe]) == 130
    err = capsys.readouterr().err
    last = next(line for line in err.splitlines() if "peftkit: interrupted" in line)
    assert last.startswith("peftkit: interrupted: stopped by Ctrl-C after step 6;")
    assert "checkpoint-6" in last and "--resume" in last
    assert "Traceback" not in err
    assert is_complete(run / "checkpoints" / "checkpoint-6")
    assert not (run / "metrics.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "training put back the previous handler"
    monkeypatch.setattr(PeftkitTrainer, "training_step", inner)
    assert main(["train", recipe, "--resume"]) == 0, capsys.readouterr().err[-2000:]
    assert f"trained {MAX_STEPS} steps" in capsys.readouterr().out, "the saved stop flag must not stop the resumed run"


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    recipe = write_recipe({**RESUMABLE, "output_dir": str(run), "train.max_steps": 8, "train.save_steps": 2})
    inner = PeftkitTrainer.compute_loss

    def poisoned(self, *args, **kwargs):
        loss = inner(self, *args, **kwargs)
        return loss * float("nan") if self.state.global_step == 4 and self.model.training else loss

    monkeypatch.setattr(PeftkitTrainer, "compute_loss", poisoned)
    assert main(["train", str(recipe)]) == 2
    captured = capsys.readouterr().err
    errors = [line for line in captured.splitlines() if "peftkit: error: " in line]
    assert len(errors) == 1 and "Traceback" not in captured
    err = errors[0]
    assert "training loss became nan at step 5" in err
    assert f"the last good checkpoint is {run / 'checkpoints' / 'checkpoint-4'}" in err
    assert not (run / "metrics.json").exists()
    good = load_file(str(run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    assert all(torch.isfinite(v).all() for v in good.values())

    monkeypatch.setattr(PeftkitTrainer, "compute_loss", inner)
    assert main(["train", str(recipe), "--resume"]) == 0
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 8


def test_resume_refusals(write_recipe, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    recipe = str(write_recipe({"output_dir": str(run), "train.max_steps": 2}))
    assert main(["train", recipe, "--resume"]) == 0, "nothing to resume: starts from scratch"
    assert main(["train", recipe, "--resume"]) == 2
    assert "holds a finished run; nothing to resume" in capsys.readouterr().err
    assert main(["train", recipe, "--resume", "--overwrite"]) == 2
    assert "--resume and --overwrite exclude each other" in capsys.readouterr().err


def test_resume_point_skips_incomplete_checkpoints(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    for step, complete in ((2, True), (4, True), (6, False)):
        path = checkpoints / f"checkpoint-{step}"
        path.mkdir(parents=True)
        (path / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (path / "trainer_state.json").write_text("{}")
    (checkpoints / "checkpoint-4" / "trainer_state.json").write_text('{"truncated')
    (checkpoints / ".staging-checkpoint-8").mkdir()
    assert resume_point(tmp_path / "run", checkpoints, "auto", overwrite=False) == checkpoints / "checkpoint-2"
    assert resume_point(tmp_path / "run", checkpoints, "never", overwrite=False) is None
    with pytest.raises(PeftkitError, match="exclude each other"):
        resume_point(tmp_path / "run", checkpoints, "auto", overwrite=True)


def test_rotation_never_deletes_the_best_checkpoint(tmp_path: Path) -> None:
    class Args:
        save_total_limit = 1
        should_save = True

    class State:
        global_step = 0
        best_model_checkpoint: str | None = None

        def save_to_json(self, path: str) -> None:
            Path(path).write_text(json.dumps({"global_step": self.global_step}))

    class Base:
        def _get_output_dir(self, trial: object) -> str:
            return str(tmp_path)

        def _save_checkpoint(self, model: object, trial: object) -> None:
            out = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            out.mkdir(parents=True)
            (out / "adapter_model.safetensors").write_bytes(b"w")
            if self.state.global_step == 2:  # the Trainer records the best checkpoint where it saved it
                self.state.best_model_checkpoint = str(out)
            self.state.save_to_json(str(out / "trainer_state.json"))

    class Fake(AtomicCheckpoints, Base):
        args, state = Args(), State()

    fake = Fake()
    for step in (2, 4, 6):
        fake.state.global_step = step
        fake._save_checkpoint(None, None)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint-2", "checkpoint-6"], "limit 1 keeps the newest and the best"
    assert fake.state.best_model_checkpoint == str(tmp_path / "checkpoint-2")


def test_gpu_out_of_memory_names_the_batch_size_and_what_to_change(
    write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(PeftkitTrainer, "training_step", out_of_memory)
    assert main(["train", str(write_recipe({"train.batch_size": 32, "train.grad_accum": 2}))]) == 2
    captured = capsys.readouterr().err
    errors = [line for line in captured.splitlines() if "peftkit: error: " in line]
    assert len(errors) == 1 and "Traceback" not in captured
    assert "out of GPU memory with train.batch_size=32 (grad_accum 2, data.max_length 32)" in errors[0]
    assert "try train.batch_size=16 train.grad_accum=4" in errors[0] and "auto_find_batch_size" in errors[0]


def test_replace_dir_and_write_text_leave_the_old_or_the_new_never_a_mix(tmp_path: Path) -> None:
    target, staged = tmp_path / "checkpoint-4", tmp_path / ".staging"
    for directory, text in ((target, "old"), (staged, "new")):
        directory.mkdir()
        (directory / "weights").write_text(text)
    replace_dir(staged, target)
    assert (target / "weights").read_text() == "new"
    out = tmp_path / "metrics.json"
    write_text(out, "1")
    write_text(out, "2")
    assert out.read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "metrics.json"], "no temporaries left"
