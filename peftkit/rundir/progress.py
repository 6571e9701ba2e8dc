"""What a person sees while the Trainer runs: one header, labelled progress bars and the log as an aligned table.

Training and `peftkit eval` / `fuse` use it in place of the Trainer's own printing (ProgressCallback's unlabelled
bars, PrinterCallback's raw dicts). The header and the rows go to stdout, the bars to stderr; ``show=False`` prints
nothing (`--quiet`, `--json`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback

#: (title, width) of each column of the log table.
COLUMNS = (("step", 7), ("loss", 8), ("learning rate", 13), ("eval loss", 9), ("{metric}", 14),
           ("samples/s", 9), ("ETA", 8))


def format_eta(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressTable(TrainerCallback):
    """Prints ``header`` (with the step count) as training begins, then a row per log: step, training loss,
    learning rate, validation loss and ``metric``, samples per second and the estimated time left; labels the
    training and evaluation bars."""

    def __init__(self, header: Sequence[str] = (), metric: str = "accuracy", show: bool = True,
                 samples_per_step: int = 1) -> None:
        self.header = list(header)
        self.metric = metric
        self.titles = [title.format(metric=f"eval {metric}") for title, _ in COLUMNS]
        self.show = show
        self.samples_per_step = samples_per_step
        self.training_bar: Any = None
        self.prediction_bar: Any = None
        self.titled = False
        self.evaluated = 0
        self.started = self.last_time = 0.0
        self.first_step = self.last_step = 0

    def _bar(self, total: int, label: str, leave: bool) -> Any:
        return tqdm(total=total, desc=label, leave=leave, dynamic_ncols=True, disable=not self.show)

    def _write(self, line: str) -> None:
        if self.show:
            tqdm.write(line)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        for line in self.header:
            self._write(line)
        if self.header:
            self._write(f"  {'steps':<10} {state.max_steps:,} (logging every {args.logging_steps})")
        self.training_bar = self._bar(state.max_steps, "training", leave=True)
        self.training_bar.update(state.global_step)
        self.started = self.last_time = time.perf_counter()
        self.first_step = self.last_step = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.training_bar.n)

    def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None,
                           **kwargs: Any) -> None:
        if not state.is_world_process_zero or eval_dataloader is None:
            return
        if self.training_bar is not None:  # on the training bar's line: a second bar would move the cursor
            self.evaluated += 1
            self.training_bar.set_postfix_str(f"evaluating validation {self.evaluated}/{len(eval_dataloader)}")
            return
        if self.prediction_bar is None:
            self.prediction_bar = self._bar(len(eval_dataloader), "evaluating test", leave=False)
        self.prediction_bar.update(1)

    def _evaluated(self) -> None:
        if self.prediction_bar is not None:
            self.prediction_bar.close()
        self.prediction_bar = None
        if self.training_bar is not None and self.evaluated:
            self.training_bar.set_postfix_str("")
        self.evaluated = 0

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._evaluated()

    def on_predict(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._evaluated()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if not state.is_world_process_zero or not ("loss" in logs or "eval_loss" in logs):
            return
        if not self.titled:
            self._write(self._aligned(self.titles))
            self.titled = True
        self._write(self.row(state, logs))

    def _aligned(self, cells: Sequence[str]) -> str:
        return "  ".join(f"{c:>{max(w, len(t))}}" for c, t, (_, w) in zip(cells, self.titles, COLUMNS, strict=True))

    def row(self, state: Any, logs: dict[str, Any]) -> str:
        """One aligned row of the log table for a training or an evaluation log entry."""
        now, step = time.perf_counter(), state.global_step
        cells = [f"{step:,}", "", "", "", "", "", ""]
        if "loss" in logs:
            cells[1] = f"{logs['loss']:.4f}"
            if "learning_rate" in logs:
                cells[2] = f"{logs['learning_rate']:.3e}"
            if step > self.last_step and now > self.last_time:
                cells[5] = f"{(step - self.last_step) * self.samples_per_step / (now - self.last_time):,.1f}"
            self.last_step, self.last_time = step, now
        else:
            cells[3] = f"{logs['eval_loss']:.4f}"
            value = logs.get(f"eval_{self.metric}")
            if isinstance(value, (int, float)):
                cells[4] = f"{value:.4f}"
            if isinstance(logs.get("eval_samples_per_second"), (int, float)):
                cells[5] = f"{logs['eval_samples_per_second']:,.1f}"
        done = step - self.first_step
        if done > 0 and state.max_steps > step:
            cells[6] = format_eta((now - self.started) / done * (state.max_steps - step))
        return self._aligned(cells)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.training_bar is not None:
            self.training_bar.close()
        self.training_bar = None


def replace_printing(trainer: Trainer, table: ProgressTable) -> None:
    """Swap the Trainer's own bars and log printing for ``table``."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(table)
