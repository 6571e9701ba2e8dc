"""A saved run's files read back as untrusted input: a damaged one is one error line naming it, never a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from peftkit.errors import PeftkitError, first_line
from peftkit.rundir.layout import MODEL_JSON_FILES, RECIPE_FILE

#: What to do about a damaged file of a run.
REMEDY = "the run is damaged — train it again or restore the file"
#: What the recipe.yaml of every saved run holds (the resolved recipe is written whole): section, key.
RUN_RECIPE_KEYS = (("model", "name"), ("method", "name"), ("task", "labels"))
#: torch's report of one tensor whose saved shape differs from the model's.
_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[([\d, ]*)\]\)"
)


class DamagedRun(PeftkitError):
    """A file of a run that is not what peftkit wrote: ``run 'x': <name> <problem>; <remedy>``."""

    def __init__(self, directory: str | Path, name: str, problem: str) -> None:
        super().__init__(f"run '{directory}': {name} {problem}; {REMEDY}")
        self.name, self.problem = name, problem


def damaged(directory: str | Path, name: str, problem: str) -> DamagedRun:
    """The error for a damaged file ``name`` of the run in ``directory``."""
    return DamagedRun(directory, name, problem)


def json_kind(value: Any) -> str:
    """A JSON value's kind as the messages name it (object, list, string, number, true/false, null)."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


def read_json_object(directory: str | Path, name: str) -> dict[str, Any]:
    """The JSON object in ``directory / name``; not UTF-8, not JSON or not an object is a damaged run."""
    path = Path(directory) / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise damaged(directory, name, "is not UTF-8 text") from None
    except OSError as exc:
        raise damaged(directory, name, f"could not be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:
        raise damaged(directory, name, f"is not valid JSON ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise damaged(directory, name, f"holds {json_kind(data)}, expected a JSON object")
    return data


def recipe_problem(raw: dict[str, Any]) -> str | None:
    """What is wrong with the mapping a run's recipe.yaml holds, said after the file's name; None if nothing."""
    if not raw:
        return "is empty, though a saved run's recipe.yaml holds the recipe it was trained with"
    for section, key in RUN_RECIPE_KEYS:
        value = raw.get(section)
        if not isinstance(value, dict) or key not in value:
            return f"has no {section}.{key}, which every saved run's recipe.yaml holds"
    return None


def check_safetensors(directory: str | Path, name: str) -> None:
    """A weights file whose header reads and covers the file (safetensors checks both on opening), with tensors."""
    try:
        with safe_open(str(Path(directory) / name), framework="pt") as weights:
            empty = not weights.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise damaged(directory, name, f"is not a safetensors file (header unreadable: {first_line(exc)})") from None
    if empty:
        raise damaged(directory, name, "holds no tensors")


def weights_files(directory: str | Path, weights: str) -> list[str]:
    """The files that hold a run's ``weights``: the file itself, or the shards its ``.index.json`` lists."""
    index = f"{weights}.index.json"
    if not (Path(directory) / index).is_file():
        return [weights]
    weight_map = read_json_object(directory, index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise damaged(directory, index, "has no 'weight_map' of tensor name → shard file")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if Path(shard).name != shard:
            raise damaged(directory, index, f"names a shard outside the run ('{shard}')")
    return shards


def check_weights(directory: str | Path, weights: str) -> None:
    """Every file of a run's ``weights`` present, each a readable safetensors file."""
    for name in weights_files(directory, weights):
        if not (Path(directory) / name).is_file():
            raise damaged(directory, name, "is missing")
        check_safetensors(directory, name)


def labels_mismatch(directory: str | Path, labels: int, outputs: int, weights: str) -> PeftkitError:
    """The error for task.labels edited in recipe.yaml so they no longer fit the saved head."""
    return PeftkitError(
        f"run '{directory}': {RECIPE_FILE} lists {labels} labels (task.labels) but the head saved in {weights} has "
        f"{outputs} outputs; put back the labels the run was trained with"
    )


def shape_mismatch(exc: RuntimeError, directory: str | Path, weights: str, labels: int,
                   outputs: int | None) -> PeftkitError | None:
    """torch's size-mismatch error on loading a run's weights as one line (None for any other error): the ``labels``
    of recipe.yaml against the saved head when that is what differs (the model built for them has ``outputs``
    where the saved head has another number), else the first tensor that does not fit."""
    found = [(key, [int(d) for d in saved.split(",") if d.strip()], [int(d) for d in model.split(",") if d.strip()])
             for key, saved, model in _SIZE_MISMATCH.findall(str(exc))]
    if not found:
        return None
    for _, saved, model in found:
        if outputs and model and saved and model[0] == outputs != saved[0]:
            return labels_mismatch(directory, labels, saved[0], weights)
    key, saved, model = found[0]
    return PeftkitError(
        f"run '{directory}': {weights} does not fit the model {RECIPE_FILE} describes ({key}: saved shape {saved}, "
        f"the model's {model}); put back the recipe.yaml the run was trained with, or train it again"
    )


def file_problems(directory: str | Path) -> list[str]:
    """What is wrong with the model files a run holds (weights, configs, tokenizer), cheaply: each present one
    parses (safetensors by its header); no weights at all is a problem too. For `peftkit runs`, which never fails."""
    directory = Path(directory)
    problems = []
    weights = sorted(p.name for p in directory.glob("*.safetensors"))
    if not weights:
        problems.append("no weights (*.safetensors)")
    checks = [*((check_safetensors, n) for n in weights),
              *((read_json_object, n) for n in MODEL_JSON_FILES if (directory / n).is_file())]
    for check, name in checks:
        try:
            check(directory, name)
        except DamagedRun as exc:
            problems.append(f"{exc.name} {exc.problem}")
    return problems
