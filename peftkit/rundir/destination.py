"""The one destination check of train, export, fuse and sweep: what may be written into, or replaced in, an output
directory; and a run's directory prepared under its lock."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.rundir import ownership
from peftkit.rundir.layout import CHECKPOINTS_DIR, RUN_FILES, WORKING_ENTRIES

#: How each option's message says that its directory is taken, and what to do instead of --overwrite.
TAKEN = {
    "output_dir": "is not empty; choose another (output_dir=runs/new)",
    "--output-dir": "is not empty; choose another (--output-dir)",
    "--out": "already exists; choose another directory",
}


def run_inputs(recipe: Recipe) -> list[str]:
    """The local files a run reads (data, model): ``--overwrite`` never deletes in a directory holding one."""
    paths = [recipe.data.source, *recipe.data.files.values(), recipe.model.name]
    return [p for p in paths if Path(p).expanduser().exists()]


def check_destination(path: Path, overwrite: bool, kind: str, option: str, inputs: Iterable[str | Path] = (),
                      protected: Path | None = None, whole: bool = False, locked: bool = False) -> None:
    """Refuse a directory that cannot take a new ``kind`` (run, export, sweep); creates and deletes nothing.

    ``path`` (named ``option`` in messages) must be new or empty; with ``overwrite``, a directory peftkit wrote as a
    ``kind`` (its manifest says so), never the current directory, the home folder, the root or one holding
    ``inputs`` or ``protected`` (the source run, which is never replaced either). ``whole``: the directory is
    replaced as a whole, so it must hold nothing its manifest does not list. ``locked``: also fail when another
    peftkit process holds its lock.
    """
    if protected is not None:
        source, target = protected.resolve(), path.resolve()
        if target == source or target in source.parents:
            raise PeftkitError(f"{option} '{path}' would replace the run '{protected}' itself; choose another "
                               "directory")
    check_parents(path, option)
    if path.exists() and not path.is_dir():
        raise PeftkitError(f"{option} '{path}' is a file, not a directory")
    if not path.is_dir():
        return
    if locked:
        ownership.check_unlocked(path, option)
    if not ownership.has_content(path):
        return
    if not overwrite:
        raise PeftkitError(f"{option} '{path}' {TAKEN[option]} or pass --overwrite")
    ownership.check_not_precious(path, option, [*inputs, *([protected] if protected else [])])
    ownership.check_owned(path, kind, option)
    foreign = ownership.foreign_entries(path) if whole else []
    if foreign:
        raise PeftkitError(
            f"--overwrite: {option} '{path}' holds files peftkit did not write ({', '.join(foreign[:5])}); "
            "refusing to delete them — move them away or choose another directory"
        )


def check_parents(path: Path, option: str) -> None:
    """Refuse a ``path`` under a file: its folder could not be made."""
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise PeftkitError(f"{option} '{path}': '{parent}' is a file, not a directory")


def prepare_output_dir(path: Path, overwrite: bool, inputs: Iterable[str | Path] = (),
                       resume: bool = False) -> ownership.DirectoryLock:
    """Create and lock output_dir for this run; ``overwrite`` first removes what an earlier run wrote.

    Only the entries the earlier run's manifest lists are deleted; anything else in the directory is left, and
    refused when the final save would replace it (a README.md of the user's). The returned lock is held until
    the run has saved (a second run into the directory fails at once).
    """
    path.mkdir(parents=True, exist_ok=True)
    lock = ownership.DirectoryLock(path).acquire()
    try:
        made = path / CHECKPOINTS_DIR  # the Trainer made it empty when it was built; phase 1 saw it absent
        if not resume and made.is_dir() and not any(made.iterdir()):
            made.rmdir()
        # checked again under the lock (another run may have won), and nothing deleted before all checks pass
        replace = not resume and ownership.has_content(path)
        if replace and not overwrite:
            raise PeftkitError(
                f"output_dir '{path}' is not empty (another run wrote it meanwhile); choose another "
                "(output_dir=runs/new) or pass --overwrite"
            )
        if replace:
            ownership.check_not_precious(path, "output_dir", inputs)
            ownership.check_owned(path, "run", "output_dir")
        clash = [name for name in ownership.foreign_entries(path) if name in RUN_FILES]
        if clash:
            raise PeftkitError(
                f"output_dir '{path}' holds {', '.join(clash)}, which peftkit did not write and the run's final save "
                "would replace; move it away or choose another output_dir"
            )
        if replace:
            ownership.remove_owned(path, "run", "output_dir")
        ownership.record(path, "run", [n for n in WORKING_ENTRIES if resume or not (path / n).exists()])
    except BaseException:
        lock.release()
        raise
    return lock
