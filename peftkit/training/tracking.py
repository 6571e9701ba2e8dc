"""Experiment tracking (`train.report_to`): TensorBoard, MLflow and W&B callbacks that write offline under the run.

Each tracker logs the resolved recipe as hyper-parameters when training starts, the Trainer's logged scalars
(training loss, learning rate, validation metrics) at their step, and the run's final test metrics at the
end. Only the main process of a multi-process run writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from peftkit.errors import PeftkitError
from peftkit.rundir.layout import LOGS_DIR, TRACKING_MARKER
from peftkit.rundir.metrics import TIMING_KEYS


def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """A nested recipe as dotted keys; lists, mappings and empty values become their JSON text."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, name + "."))
        elif isinstance(value, (str, int, float, bool)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, ensure_ascii=False)
    return flat


def scalar_tag(key: str) -> str:
    """The Trainer's log key as a tracker tag: ``eval_accuracy`` → ``eval/accuracy``, ``loss`` → ``train/loss``
    (the end-of-training summary keeps its name: ``train_loss``, the mean loss, → ``train/train_loss``)."""
    for split in ("eval", "test"):
        if key.startswith(split + "_"):
            return f"{split}/{key.removeprefix(split + '_')}"
    return f"train/{key}"


def test_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric final test metrics of a run (timings left out) as ``test/<name>``."""
    return {f"test/{k}": float(v) for k, v in metrics.get("test", {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in TIMING_KEYS}


class Tracker(TrainerCallback, ABC):
    """One tracking backend: opened at the start of training, fed every log, closed by :func:`finish`."""

    name: ClassVar[str]
    package: ClassVar[str]

    def __init__(self, directory: Path, run_name: str, recipe: Any) -> None:
        self.directory, self.run_name, self.recipe = directory, run_name, recipe
        self.started = False

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.started:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / TRACKING_MARKER).write_text(json.dumps({"run": self.run_name, "report_to": list(
            self.recipe.train.report_to)}), encoding="utf-8")
        self.start(flat_params(self.recipe.model_dump(mode="json")), self.recipe.to_yaml())
        self.started = True

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not self.started or not state.is_world_process_zero:
            return
        scalars = {scalar_tag(k): float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("test_")}
        if scalars:
            self.log(scalars, state.global_step)

    @abstractmethod
    def start(self, params: dict[str, Any], recipe_yaml: str) -> None:
        """Open the backend and log the resolved recipe (flattened ``params`` and its YAML)."""

    @abstractmethod
    def log(self, scalars: dict[str, float], step: int) -> None:
        """Log scalars at a training step."""

    @abstractmethod
    def close(self, test: dict[str, float], params: dict[str, Any], step: int) -> None:
        """Log the final test metrics (and anything tied to them) and release the backend."""


class TensorBoardTracker(Tracker):
    """Event files in ``<logs>/tensorboard/<run name>``; the recipe as text and as hparams with the test metrics."""

    name, package = "tensorboard", "tensorboard"

    def start(self, params: dict[str, Any], recipe_yaml: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.directory / "tensorboard" / self.run_name))
        self.writer.add_text("recipe", "```yaml\n" + recipe_yaml + "```")
        self.writer.flush()

    def log(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self, test: dict[str, float], params: dict[str, Any], step: int) -> None:
        self.log(test, step)
        self.writer.add_hparams(params, {f"hparam/{k}": v for k, v in test.items()}, run_name=".",
                                global_step=step)
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run in the file store ``<logs>/mlruns`` (experiment ``peftkit``), through MlflowClient."""

    name, package = "mlflow", "mlflow"
    EXPERIMENT = "peftkit"

    def start(self, params: dict[str, Any], recipe_yaml: str) -> None:
        # MLflow 3 keeps the file store behind this switch; it is what runs offline without a database.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=(self.directory / "mlruns").resolve().as_uri())
        experiment = self.client.get_experiment_by_name(self.EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.EXPERIMENT)
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.client.log_text(self.run_id, recipe_yaml, "recipe.yaml")

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = _millis()
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in scalars.items()])

    def close(self, test: dict[str, float], params: dict[str, Any], step: int) -> None:
        self.log(test, step)
        self.client.set_terminated(self.run_id)


class WandbTracker(Tracker):
    """A W&B run under ``<logs>/wandb`` in offline mode (unless WANDB_MODE says otherwise); `wandb sync` uploads."""

    name, package = "wandb", "wandb"

    def start(self, params: dict[str, Any], recipe_yaml: str) -> None:
        import wandb

        self.run = wandb.init(mode=os.environ.get("WANDB_MODE", "offline"), dir=str(self.directory),
                              project=os.environ.get("WANDB_PROJECT", "peftkit"), name=self.run_name, config=params)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self, test: dict[str, float], params: dict[str, Any], step: int) -> None:
        self.run.log(test, step=step)
        self.run.summary.update(test)
        self.run.finish()


TRACKERS: dict[str, type[Tracker]] = {t.name: t for t in (TensorBoardTracker, MlflowTracker, WandbTracker)}
EXTRAS = {"tensorboard": "peftkit[tensorboard]", "mlflow": "peftkit[mlflow]", "wandb": "wandb"}


def _millis() -> int:
    return int(time.time() * 1000)


def chosen(report_to: list[str]) -> list[str]:
    """The trackers a ``train.report_to`` list names; ``none`` alone (or nothing) = none, checked installed."""
    names = [n for n in report_to if n != "none"]
    if "none" in report_to and names:
        raise PeftkitError(f"'train.report_to': 'none' cannot be combined with {', '.join(names)}")
    for name in names:
        if importlib.util.find_spec(TRACKERS[name].package) is None:
            raise PeftkitError(f"'train.report_to': {name} needs the {TRACKERS[name].package} package; "
                               f"pip install '{EXTRAS[name]}'")
    return list(dict.fromkeys(names))


def logs_dir(recipe: Any, output_dir: Path) -> Path:
    """Where trackers write: ``train.tracking_dir`` (which many runs may share), else ``<output_dir>/logs``."""
    return Path(recipe.train.tracking_dir) if recipe.train.tracking_dir else output_dir / LOGS_DIR


def callbacks(recipe: Any, output_dir: Path) -> list[Tracker]:
    """One callback per tracker of ``train.report_to``, writing under :func:`logs_dir`."""
    return [TRACKERS[name](logs_dir(recipe, output_dir), output_dir.name, recipe)
            for name in chosen(recipe.train.report_to)]


def finish(trainer: Trainer, metrics: dict[str, Any]) -> None:
    """Log the run's final test metrics to every started tracker of ``trainer`` and close them."""
    test = test_scalars(metrics)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, Tracker) and callback.started:
            params = flat_params(callback.recipe.model_dump(mode="json"))
            callback.close(test, params, trainer.state.global_step)
            callback.started = False
