"""Run safety: peftkit deletes only what it wrote, locks a run directory, keeps the weights when the final save
fails, cleans its own stale staging folders, and re-verifies cached files that changed.

Each case runs the CLI as a user types it and checks the exit code, the one `peftkit: error:` line and that
no user file was touched. Runs use a tiny random BERT (seconds on a CPU).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import make_sentiment_rows, save_tiny_models, tiny_recipe, write_csv, write_recipe_file

from peftkit import markers
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.rundir import ownership
from peftkit.rundir.layout import STAGING_MARKER
from peftkit.rundir.staging import staged_directory


@pytest.fixture(scope="module")
def narrow_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with the tests' word-level tokenizer."""
    return save_tiny_models(tmp_path_factory.mktemp("tiny-bert"), width=32)["bert"]


@pytest.fixture
def project(tmp_path: Path, narrow_bert: Path) -> Path:
    """A user's project folder: a recipe, its training CSV and notes, as a user keeps them together."""
    root = tmp_path / "project"
    root.mkdir()
    write_csv(root / "train.csv", make_sentiment_rows(120))
    (root / "notes.txt").write_text("my notes", encoding="utf-8")
    write_project_recipe(root / "recipe.yaml", narrow_bert, root / "train.csv")
    return root


def write_project_recipe(path: Path, model: Path, data: Path, **train: Any) -> Path:
    """4 steps of LoRA (r 2) on ``model``; ``train``: train-section keys."""
    recipe = tiny_recipe(model, data, {
        "method": {"name": "lora", "r": 2, "alpha": 4, "target_modules": ["query", "value"]},
        "data.max_length": 16,
        "train.max_steps": 4, "train.batch_size": 8, "train.logging_steps": 1, "train.group_by_length": True,
    }, {f"train.{key}": value for key, value in train.items()})
    return write_recipe_file(path, recipe)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def user_files(root: Path) -> dict[str, tuple[int, int]]:
    """``snapshot`` without peftkit's lock files, which taking a lock rewrites."""
    return {name: stat for name, stat in snapshot(root).items() if not name.endswith(ownership.LOCK)}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and the stderr of `peftkit ARGV`; a refused command must print exactly one error line."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    if code != 0:
        errors = [line for line in err.splitlines() if line.startswith("peftkit")]
        assert "Traceback" not in err
        assert len(errors) == 1 and errors[0].startswith("peftkit: error: "), err[-1500:]
        return code, errors[0]
    assert code == 0, err[-1500:]
    return code, out


# --overwrite deletes only what peftkit wrote ---------------------------------------------------------------


def test_overwrite_refuses_the_project_folder_holding_the_recipe_and_data(
        project: Path, capsys: pytest.CaptureFixture) -> None:
    before = snapshot(project)
    code, error = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={project}", "--overwrite"], capsys)
    assert code == 2
    assert "refusing" in error and str(project) in error
    assert snapshot(project) == before


def test_overwrite_refuses_the_current_directory(project: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    before = snapshot(project)
    code, error = run_cli(["train", "recipe.yaml", "output_dir=.", "--overwrite"], capsys)
    assert code == 2 and "is the current directory; refusing" in error
    assert snapshot(project) == before


def test_overwrite_refuses_a_folder_peftkit_did_not_write(project: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "recipe.yaml").write_text("not a run, just a recipe.yaml", encoding="utf-8")
    (mine / "checkpoints").mkdir()
    before = snapshot(mine)
    code, error = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={mine}", "--overwrite"], capsys)
    assert code == 2 and f"no {ownership.MANIFEST} written by peftkit" in error
    assert snapshot(mine) == before


def test_overwrite_replaces_the_run_and_keeps_the_users_own_files(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={out}"], capsys)[0] == 0
    manifest = ownership.read_manifest(out)
    assert manifest and manifest["kind"] == "run" and "metrics.json" in manifest["entries"]
    (out / "my-analysis.txt").write_text("keep me", encoding="utf-8")
    (out / ".staging").mkdir()  # peftkit's own leftover from a killed save: listed, so removed
    (out / ".staging" / "tokenizer.json").write_text('{"trunc', encoding="utf-8")
    first = (out / "metrics.json").stat().st_mtime_ns
    code, _ = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={out}", "--overwrite"], capsys)
    assert code == 0
    assert (out / "my-analysis.txt").read_text(encoding="utf-8") == "keep me"
    assert not (out / ".staging").exists()
    assert (out / "metrics.json").stat().st_mtime_ns != first
    assert "my-analysis.txt" not in ownership.read_manifest(out)["entries"]


def test_export_overwrite_refuses_a_folder_that_is_no_export(project: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}"], capsys)[0] == 0
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work", encoding="utf-8")
    before = snapshot(tmp_path)
    code, error = run_cli(["export", str(run), "--out", str(folder), "--overwrite", "--samples", "4"], capsys)
    assert code == 2 and "is not a peftkit export" in error
    assert snapshot(tmp_path) == before
    exported = tmp_path / "exported"
    assert run_cli(["export", str(run), "--out", str(exported), "--samples", "4"], capsys)[0] == 0
    (exported / "thesis.tex").write_text("mine", encoding="utf-8")
    code, error = run_cli(["export", str(run), "--out", str(exported), "--overwrite", "--samples", "4"], capsys)
    assert code == 2 and "holds files peftkit did not write (thesis.tex)" in error
    (exported / "thesis.tex").unlink()
    assert run_cli(["export", str(run), "--out", str(exported), "--overwrite", "--samples", "4"], capsys)[0] == 0


# Bookkeeping files are read back as untrusted input ------------------------------------------------------------

#: Manifests peftkit never writes, each with what the refusal says about it; ``{victim}``: a folder beside the run.
TAMPERED = {
    "parent": ('["../victim"]', "it lists '../victim', which is not a plain name inside the folder"),
    "absolute": ('["{victim}"]', "it lists '{victim}', which is not a plain name inside the folder"),
    "dot": ('["."]', "it lists '.', which is not a plain name inside the folder"),
    "nested": ('["checkpoints/../../victim"]', "it lists 'checkpoints/../../victim', which is not a plain name"),
    "bookkeeping": ('[".peftkit-lock"]', "it lists '.peftkit-lock', one of peftkit's own bookkeeping files"),
    "not-a-name": ('[["victim"]]', "it lists an entry that is not a name (['victim'])"),
}
GARBAGE = {
    "not-json": ("{kind: run, entries", "it is not JSON"),
    "a-list": ('["../victim"]', 'expected {"kind": "...", "entries": [names]}'),
    "entries-a-string": ('{"kind": "{kind}", "entries": "../victim"}', 'expected {"kind": "...", "entries": [names]}'),
}


def _manifest_text(case: str, kind: str, victim: Path) -> tuple[str, str]:
    if case in TAMPERED:
        entries, expected = TAMPERED[case]
        text = f'{{"written_by": "peftkit", "kind": "{kind}", "entries": {entries}}}'
    else:
        text, expected = GARBAGE[case]
    return text.replace("{victim}", str(victim)).replace("{kind}", kind), expected.replace("{victim}", str(victim))


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work", encoding="utf-8")
    return victim


@pytest.mark.parametrize("case", [*TAMPERED, *GARBAGE])
@pytest.mark.parametrize("verb", ["train", "sweep"])
def test_overwrite_deletes_nothing_on_the_word_of_a_tampered_or_garbage_manifest(
        verb: str, case: str, project: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    victim = _victim(tmp_path)
    folder = tmp_path / "received"  # a run or sweep folder someone sent
    folder.mkdir()
    (folder / "trials.csv" if verb == "sweep" else folder / "adapter_model.safetensors").write_text("x")
    (folder / "my-notes.txt").write_text("notes", encoding="utf-8")
    text, expected = _manifest_text(case, "sweep" if verb == "sweep" else "run", victim)
    (folder / ownership.MANIFEST).write_text(text, encoding="utf-8")
    if verb == "train":
        argv = ["train", str(project / "recipe.yaml"), f"output_dir={folder}", "--overwrite"]
    else:
        pytest.importorskip("optuna")
        (project / "space.yaml").write_text("method.r: [2, 4]\n", encoding="utf-8")
        argv = ["sweep", str(project / "recipe.yaml"), "--space", str(project / "space.yaml"), "--trials", "1",
                "--output-dir", str(folder), "--overwrite"]
    before = snapshot(tmp_path)
    code, error = run_cli(argv, capsys)
    assert code == 2, error
    assert f"'{folder / ownership.MANIFEST}' is not a manifest peftkit wrote: {expected}" in error
    assert "it deletes nothing there" in error
    assert snapshot(tmp_path) == before


def test_a_symlinked_manifest_or_lock_is_refused_not_followed(project: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    victim = _victim(tmp_path)
    (victim / "manifest.json").write_text('{"kind": "run", "entries": ["thesis.tex"]}', encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    (run / "thesis.tex").symlink_to(victim / "thesis.tex")
    (run / ownership.MANIFEST).symlink_to(victim / "manifest.json")
    before = snapshot(tmp_path)
    code, error = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}", "--overwrite"], capsys)
    assert code == 2 and f"'{run / ownership.MANIFEST}' is a symlink; peftkit does not follow it" in error
    assert snapshot(tmp_path) == before
    locked = tmp_path / "locked"  # a lock pointing at a user's file: opening it for writing would truncate it
    locked.mkdir()
    (locked / ownership.LOCK).symlink_to(victim / "thesis.tex")
    before = snapshot(tmp_path)
    code, error = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={locked}"], capsys)
    assert code == 2 and f"'{locked / ownership.LOCK}' is a symlink; peftkit does not follow it" in error
    assert snapshot(tmp_path) == before and (victim / "thesis.tex").read_text() == "years of work"


def test_overwrite_unlinks_a_symlinked_entry_and_never_follows_it(project: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    victim = _victim(tmp_path)
    run = tmp_path / "run"
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}"], capsys)[0] == 0
    (run / "logs").symlink_to(victim, target_is_directory=True)  # listed (a tracker's logs), now a link outside
    (run / "README.md").unlink()
    (run / "README.md").symlink_to(victim / "thesis.tex")
    before = snapshot(victim)
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}", "--overwrite"], capsys)[0] == 0
    assert snapshot(victim) == before
    assert not (run / "logs").exists() and not (run / "README.md").is_symlink()


def _unfinished_run(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A run killed at its final save (no space anywhere): its checkpoint kept, no final files."""
    recipe = write_project_recipe(tmp_path / "ckpt.yaml", *_model_and_data(project), save_strategy="steps",
                                  save_steps=2)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _fail_writes_under(patch, Path("/"))
        assert run_cli(["train", str(recipe), f"output_dir={out}"], capsys)[0] == 2
    assert (out / "checkpoints" / "checkpoint-4").is_dir() and not (out / "README.md").exists()
    return recipe, out


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_users_readme_in_an_unfinished_run_is_never_replaced(
        flag: str, project: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, out = _unfinished_run(project, tmp_path, capsys, monkeypatch)
    (out / "README.md").write_text("my notes on this run", encoding="utf-8")
    before = user_files(out)
    code, error = run_cli(["train", str(recipe), f"output_dir={out}", flag], capsys)
    assert code == 2
    assert f"output_dir '{out}' holds README.md, which peftkit did not write and the run's final save" in error
    assert user_files(out) == before


def test_a_users_curves_png_in_an_unfinished_run_is_kept_and_the_run_saved(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, out = _unfinished_run(project, tmp_path, capsys, monkeypatch)
    (out / "curves.png").write_text("my own picture", encoding="utf-8")
    code, _ = run_cli(["train", str(recipe), f"output_dir={out}", "--resume"], capsys)
    assert code == 0 and (out / "metrics.json").is_file()
    assert (out / "curves.png").read_text(encoding="utf-8") == "my own picture"
    assert "curves.png" not in ownership.read_manifest(out)["entries"]


def _on_train_end(action: Any) -> Any:
    from transformers import TrainerCallback

    class Act(TrainerCallback):
        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            action()

    return Act()


@pytest.mark.parametrize("change", ["readme", "renamed-and-replaced", "symlinked"])
def test_the_final_save_checks_the_run_folder_again_and_keeps_the_run_elsewhere(
        change: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftkit import train

    out, moved, victim = tmp_path / "run", tmp_path / "moved", _victim(tmp_path)
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spare))

    def act() -> None:  # while the run trains: the user's README, or the folder swapped for another
        if change == "readme":
            (out / "README.md").write_text("mine", encoding="utf-8")
            return
        out.rename(moved)
        if change == "symlinked":
            out.symlink_to(victim, target_is_directory=True)
        else:
            out.mkdir()
            (out / "new.txt").write_text("new", encoding="utf-8")

    before = snapshot(victim)
    with pytest.raises(PeftkitError) as refused:
        train(project / "recipe.yaml", callbacks=[_on_train_end(act)], output_dir=str(out))
    rescued = next(spare.glob("peftkit-rescued-run-*"))
    if change == "readme":
        assert f"output_dir '{out}' holds README.md, which peftkit did not write" in str(refused.value)
        assert (out / "README.md").read_text() == "mine" and not (out / "metrics.json").exists()
        assert not (out / ".staging").exists()
    else:
        assert f"output_dir '{out}' was moved or replaced while peftkit was writing it" in str(refused.value)
        assert not (moved / "metrics.json").exists()
        assert sorted(p.name for p in out.iterdir()) == (["new.txt"] if change != "symlinked" else ["thesis.tex"])
    assert f"the trained run was saved to '{rescued}' instead" in str(refused.value)
    assert (rescued / "adapter_model.safetensors").is_file() and (rescued / "metrics.json").is_file()
    assert snapshot(victim) == before


def test_an_out_created_by_someone_else_during_an_export_is_left_as_it_is(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import peftkit.export.merge

    run = tmp_path / "run"
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}"], capsys)[0] == 0
    out = tmp_path / "exports" / "exp"
    real = peftkit.export.merge.write_export_card

    def meanwhile(*args: Any) -> None:  # between the check of --out and the rename: a user makes it
        real(*args)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mine.txt").write_text("mine", encoding="utf-8")

    monkeypatch.setattr(peftkit.export.merge, "write_export_card", meanwhile)
    for overwrite in ([], ["--overwrite"]):
        code, error = run_cli(["export", str(run), "--out", str(out), "--samples", "4", *overwrite], capsys)
        assert code == 2
        assert f"--out '{out}' was created by something else while this command ran; it is left as it is" in error
        assert sorted(p.name for p in out.parent.iterdir()) == ["exp"]  # no partial folder, no lock left
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
        (out / "mine.txt").unlink()
        out.rmdir()


def test_a_second_export_to_one_out_fails_at_once_on_the_lock(project: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}"], capsys)[0] == 0
    out = tmp_path / "exp"
    with (tmp_path / f".exp{ownership.LOCK}").open("w", encoding="utf-8") as other:  # another export's lock
        fcntl.flock(other, fcntl.LOCK_EX)
        other.write("pid 4242 on elsewhere")
        other.flush()
        before = snapshot(tmp_path)
        code, error = run_cli(["export", str(run), "--out", str(out), "--samples", "4"], capsys)
        assert code == 2 and f"--out '{out}' is being written by another peftkit run (pid 4242 on elsewhere)" in error
        assert snapshot(tmp_path) == before
    (tmp_path / f".exp{ownership.LOCK}").unlink()
    (tmp_path / f".exp{ownership.LOCK}").symlink_to(project / "notes.txt")  # a lock beside --out is not followed
    code, error = run_cli(["export", str(run), "--out", str(out), "--samples", "4"], capsys)
    assert code == 2 and "is a symlink; peftkit does not follow it" in error
    assert (project / "notes.txt").read_text() == "my notes"
    (tmp_path / f".exp{ownership.LOCK}").unlink()
    assert run_cli(["export", str(run), "--out", str(out), "--samples", "4"], capsys)[0] == 0
    assert not (tmp_path / f".exp{ownership.LOCK}").exists()


def test_sweeps_lock_their_folder_and_keep_a_users_trial_folder(project: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("optuna")
    (project / "space.yaml").write_text("method.r: [2, 4]\n", encoding="utf-8")
    out = tmp_path / "sweep"
    argv = ["sweep", str(project / "recipe.yaml"), "--space", str(project / "space.yaml"), "--trials", "1",
            "--output-dir", str(out), "--pruner", "none"]
    out.mkdir()
    with ownership.DirectoryLock(out, "--output-dir").acquire():  # as another sweep holds it
        before = snapshot(tmp_path)
        code, error = run_cli(argv, capsys)
        assert code == 2 and f"'{out}' is being written by another peftkit run (pid {os.getpid()} " in error
        assert snapshot(tmp_path) == before
    (out / "trials.csv").write_text("trial\n0\n", encoding="utf-8")  # an earlier sweep's …
    ownership.record(out, "sweep", ["trials.csv", "best.yaml"])
    (out / "trial-000").mkdir()  # … and a user's folder it never listed
    (out / "trial-000" / "notes.txt").write_text("mine", encoding="utf-8")
    before = user_files(tmp_path)
    code, error = run_cli([*argv, "--overwrite"], capsys)
    assert code == 2 and f"'{out}' holds trial-000, which peftkit did not write and the sweep would replace" in error
    assert user_files(tmp_path) == before


# The run lock -----------------------------------------------------------------------------------------------


def test_a_run_into_a_locked_output_dir_fails_at_once_and_runs_once_it_is_released(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The lock as another run holds it (a flock on its own open file); the SIGKILL case is in the slow tier."""
    out = tmp_path / "run"
    out.mkdir()
    holder = ownership.DirectoryLock(out).acquire()
    try:
        code, error = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={out}"], capsys)
        assert code == 2 and f"is being written by another peftkit run (pid {os.getpid()} " in error
        assert not (out / "metrics.json").exists()
    finally:
        holder.release()
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={out}"], capsys)[0] == 0


@pytest.mark.slow  # SIGKILL
def test_a_second_run_into_a_busy_output_dir_fails_at_once_naming_the_first(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    slow = write_project_recipe(tmp_path / "slow.yaml", *_model_and_data(project), max_steps=100_000)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "peftkit", "train", str(slow), f"output_dir={out}"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / ownership.LOCK).is_file() or "pid" not in (out / ownership.LOCK).read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.2)
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert first.poll() is None, "the second run must fail while the first is still training"
        errors = [line for line in second.stderr.splitlines() if line.startswith("peftkit")]
        assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
        assert f"is being written by another peftkit run (pid {first.pid} " in errors[0]
        assert "run saved" not in second.stdout
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel dropped the dead run's lock: a new run may replace what it left
    third = subprocess.run([*command, "--overwrite", "train.max_steps=2"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == 2


def _model_and_data(project: Path) -> tuple[Path, Path]:
    recipe = yaml.safe_load((project / "recipe.yaml").read_text())
    return Path(recipe["model"]["name"]), Path(recipe["data"]["source"])


# A full disk during the final save ---------------------------------------------------------------------------


def _fail_writes_under(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """The model card write fails with ENOSPC for files under ``root`` (the disk holding output_dir)."""
    import peftkit.rundir.save

    real = peftkit.rundir.save.write_model_card

    def full(directory: Path, *args: Any) -> None:
        if Path(directory).resolve().is_relative_to(root.resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(directory, *args)

    monkeypatch.setattr(peftkit.rundir.save, "write_model_card", full)


def test_full_disk_at_the_final_save_keeps_the_run_elsewhere_and_says_where(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "disk" / "run"
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spare))
    _fail_writes_under(monkeypatch, tmp_path / "disk")
    before = snapshot(project)
    code, error = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={out}"], capsys)
    assert code == 2 and "No space left on device" in error
    rescued = next(spare.glob("peftkit-rescued-run-*"))
    assert f"the trained run was saved to '{rescued}' instead" in error
    assert not (out / ".staging").exists() and not (out / "metrics.json").exists()
    assert snapshot(project) == before
    code, printed = run_cli(["predict", str(rescued), "a wonderful film"], capsys)
    assert code == 0 and printed.split()[0] in ("positive", "negative"), printed
    assert ownership.read_manifest(rescued)["kind"] == "run"


def test_full_disk_everywhere_keeps_the_last_checkpoint_and_resume_finishes(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = _model_and_data(project)
    recipe = write_project_recipe(tmp_path / "ckpt.yaml", model, data, save_strategy="steps", save_steps=2)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _fail_writes_under(patch, Path("/"))
        code, error = run_cli(["train", str(recipe), f"output_dir={out}"], capsys)
    assert code == 2
    assert f"its last checkpoint '{out / 'checkpoints' / 'checkpoint-4'}' is kept" in error and "--resume" in error
    assert (out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors").is_file()
    code, _ = run_cli(["train", str(recipe), f"output_dir={out}", "--resume"], capsys)
    assert code == 0 and (out / "metrics.json").is_file()


def test_a_real_full_disk_on_a_small_tmpfs(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "tmpfs"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        spare = tmp_path / "spare"
        spare.mkdir()
        monkeypatch.setattr("tempfile.tempdir", str(spare))
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 16 * 1024))  # room for the lock and manifest only
        code, error = run_cli(["train", str(project / "recipe.yaml"), f"output_dir={disk / 'run'}"], capsys)
        assert code == 2 and "No space left on device" in error and "the trained run was saved to" in error
        assert not (disk / "run" / ".staging").exists()
        assert (next(spare.glob("peftkit-rescued-run-*")) / "adapter_model.safetensors").is_file()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_during_export_is_one_line_and_writes_nothing(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import SafetensorError

    run = tmp_path / "run"
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}"], capsys)[0] == 0

    def full(*args: Any, **kwargs: Any) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", full)
    before = snapshot(tmp_path)
    code, error = run_cli(["export", str(run), "--out", str(tmp_path / "exp"), "--samples", "4"], capsys)
    assert code == 2 and "No space left on device" in error and "nothing was written" in error
    assert snapshot(tmp_path) == before


# Stale staging folders ----------------------------------------------------------------------------------------


@pytest.mark.slow  # SIGKILL
def test_a_killed_exports_partial_folder_is_recognised_and_removed(tmp_path: Path) -> None:
    out, busy = tmp_path / "export", tmp_path / "busy"
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom peftkit.rundir.staging import staged_directory\n"
        "with staged_directory(Path(sys.argv[1])) as s:\n"
        "    (s / 'model.safetensors').write_bytes(b'x' * 1000)\n    print(s, flush=True)\n    time.sleep(60)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
               for path in (out, busy)]
    partials = [Path(w.stdout.readline().strip()) for w in writers]
    writers[0].send_signal(signal.SIGKILL)  # like kill -9 during an export
    writers[0].wait()
    deadline = time.monotonic() + 10  # the kernel drops the dead writer's lock; on a loaded machine not at once
    while not markers.is_abandoned(partials[0], STAGING_MARKER) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert partials[0].is_dir() and markers.is_abandoned(partials[0], STAGING_MARKER)
    assert not markers.is_abandoned(partials[1], STAGING_MARKER), "a live export's folder is not stale"
    (tmp_path / ".export.mine.partial").mkdir()  # same pattern, no marker: not peftkit's, kept
    try:
        with pytest.raises(PeftkitError, match=f"--out '{busy}' is being written by another peftkit run "
                                                f"\\(pid {writers[1].pid} "), staged_directory(busy):
            pass  # a second export to one --out fails at once on the lock
        with staged_directory(out) as staging:
            (staging / "config.json").write_text("{}", encoding="utf-8")
        assert not partials[0].exists()
        assert partials[1].is_dir() and (tmp_path / ".export.mine.partial").is_dir()
        assert ownership.read_manifest(out) == {"written_by": "peftkit", "kind": "export", "entries": ["config.json"]}
        assert not (tmp_path / ".export.peftkit-lock").exists(), "the lock beside --out goes with its writer"
    finally:
        writers[1].send_signal(signal.SIGKILL)
        writers[1].wait()


# Predict without the training data; text that looks like a missing value -------------------------------------


def test_predict_needs_no_training_data(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert run_cli(["train", str(project / "recipe.yaml"), f"output_dir={run}"], capsys)[0] == 0
    (project / "train.csv").rename(project / "moved.csv")
    code, printed = run_cli(["predict", str(run), "a wonderful film"], capsys)
    assert code == 0 and printed.split()[0] in ("positive", "negative"), printed
    code, error = run_cli(["eval", str(run)], capsys)
    assert code == 2 and "train.csv' does not exist" in error


def test_na_null_and_none_are_text_in_csv(tmp_path: Path) -> None:
    from peftkit.data import read_file

    path = tmp_path / "t.csv"
    path.write_text("text,label\nNA,positive\nnull,negative\nNone,positive\n,negative\n", encoding="utf-8")
    assert read_file(path)["text"] == ["NA", "null", "None", None]


def test_refused_data_commands_leave_no_arrow_cache(tmp_path: Path, project: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    bad = project / "bad.csv"
    bad.write_text("text,label\ngood,positive\nbad,\n", encoding="utf-8")
    code, error = run_cli(["train", str(project / "recipe.yaml"), f"data.source={bad}",
                           f"output_dir={tmp_path / 'run'}"], capsys)
    assert code == 2 and "missing label" in error
    assert not cache.exists() or not any(cache.rglob("*.arrow"))


# Cached catalogue files are verified again when they changed --------------------------------------------------


def test_a_changed_cached_file_is_refused_and_fetch_repairs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    from peftkit.data import cache

    monkeypatch.setenv("PEFTKIT_CACHE", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "models" / "minilm-l6"
    entry.mkdir(parents=True)
    weights = entry / "model.safetensors"
    weights.write_bytes(b"\1" * 4096)
    cache._record_verified(entry)
    assert cache.fetch_model("minilm-l6") == entry
    os.utime(weights, ns=(1, 1))  # touched, same content: accepted, new mtime remembered
    assert cache.fetch_model("minilm-l6") == entry
    with weights.open("r+b") as f:  # one flipped byte, same size
        f.seek(100)
        f.write(b"\2")
    code, error = run_cli(["models", "fetch", "nothing"], capsys)  # an unrelated command is unaffected
    assert code == 2 and "unknown model 'nothing'" in error
    with pytest.raises(cache.PeftkitError) as refused:
        cache.fetch_model("minilm-l6")
    assert f"file '{weights}' changed since it was verified" in str(refused.value)
    assert "`peftkit models fetch minilm-l6` fetches it again" in str(refused.value)
    fetched = []
    monkeypatch.setattr(cache, "_fetch_into", lambda kind, e, build, final: fetched.append(final) or final)
    assert run_cli(["models", "fetch", "minilm-l6"], capsys)[0] == 0
    assert fetched == [entry] and not entry.exists(), "fetch removed the changed copy and fetched it again"


@pytest.mark.parametrize("where", ["under-a-file", "read-only-mount"])
def test_an_unwritable_cache_is_one_line(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "ro"
    if where == "under-a-file":
        root.write_text("x", encoding="utf-8")
    else:
        root.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(root)],
                                               capture_output=True).returncode != 0:
            pytest.skip("mounting a read-only tmpfs needs root")
    monkeypatch.setenv("PEFTKIT_CACHE", str(root / "cache"))
    try:
        code, error = run_cli(["data", "fetch", "movie-snippets"], capsys)
        assert code == 2 and "into the cache" in error and "set PEFTKIT_CACHE to a writable directory" in error
    finally:
        if where == "read-only-mount":
            subprocess.run(["umount", str(root)], check=True)
