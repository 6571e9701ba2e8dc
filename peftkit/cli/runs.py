"""Verbs on saved runs: `eval`, `predict`, `runs`, `plot`."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftkit.cli.common import Verbs, positive_int, print_metrics, verb
from peftkit.errors import PeftkitError
from peftkit.rundir import atomic


def add_eval(verbs: Verbs) -> None:
    """Declare `peftkit eval RUN [--json FILE]`."""
    evaluate = verb(verbs, "eval", cmd_eval, "evaluate a saved run on its test split")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--json", help="also write the metrics to this JSON file")


def cmd_eval(args: argparse.Namespace) -> None:
    """Evaluate a run on its test split; show the metrics saved at training time beside the main ones."""
    from peftkit.rundir.inference import evaluate_with
    from peftkit.rundir.load import load_run
    from peftkit.rundir.metrics import FALLBACK_METRICS

    if args.json and not Path(args.json).parent.is_dir():
        raise PeftkitError(f"--json: directory '{Path(args.json).parent}' does not exist")
    if args.json and Path(args.json).is_dir():
        raise PeftkitError(f"--json '{args.json}' is a directory, expected a file")
    run = load_run(args.run)
    metrics = evaluate_with(run)
    print_metrics(f"test metrics of {args.run}:", metrics)
    saved = run.metrics.get("test", {})
    for key in (k for k in FALLBACK_METRICS if k in metrics):
        if isinstance(saved.get(key), (int, float)) and not isinstance(saved[key], bool):
            print(f"  (saved at training time: {key} {saved[key]:.4f})")
    if args.json:
        atomic.write_text(args.json, json.dumps(metrics, indent=2))


def add_predict(verbs: Verbs) -> None:
    """Declare `peftkit predict RUN [TEXT ...] [--file FILE] [--batch-size N] [--json]`."""
    predict = verb(verbs, "predict", cmd_predict, "predict labels for texts with a saved run")
    predict.add_argument("run", help="run directory")
    predict.add_argument("texts", nargs="*", help="texts to classify")
    predict.set_defaults(trailing="texts")
    predict.add_argument("--file", help="a UTF-8 file with one text per line")
    predict.add_argument("--batch-size", type=positive_int, default=32, help="texts per forward pass")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")


def cmd_predict(args: argparse.Namespace) -> None:
    """Print one prediction per text (from the arguments, then `--file`): the head's line, or JSON."""
    from peftkit.quiet import no_progress_bars
    from peftkit.rundir.inference import predict_with, texts_to_predict
    from peftkit.rundir.load import load_run

    no_progress_bars()  # one line per text, nothing between
    texts = list(args.texts)
    if args.file:
        path = Path(args.file)
        if path.is_dir():
            raise PeftkitError(f"--file '{path}' is a directory, expected a file")
        if not path.is_file():
            what = "is not a regular file (a FIFO or device)" if path.exists() else "does not exist"
            raise PeftkitError(f"--file '{path}' {what}")
        try:
            texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise PeftkitError(f"--file '{path}': not UTF-8 text") from None
    texts = texts_to_predict(texts)
    run = load_run(args.run)
    line: Callable[[dict[str, Any]], str]
    line = functools.partial(json.dumps, ensure_ascii=False) if args.json else run.head.format_prediction
    for prediction in predict_with(run, texts, args.batch_size):
        print(line(prediction))


def add_runs(verbs: Verbs) -> None:
    """Declare `peftkit runs [DIRECTORY] [--sort COLUMN] [--reverse] [--json | --csv]`."""
    runs = verb(verbs, "runs", cmd_runs, "a table of the runs under a directory: finished, unfinished and broken")
    runs.add_argument("directory", nargs="?", default="runs", help="where to look (default: runs)")
    runs.add_argument("--sort", default="name",
                      help="column to sort by: name, status, model, method, quantization, head, data, metric (best "
                           "first), trainable, time, date (newest first)")
    runs.add_argument("--reverse", action="store_true", help="reverse the sort order")
    output = runs.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    output.add_argument("--csv", action="store_true", help="print the rows as CSV")


def cmd_runs(args: argparse.Namespace) -> None:
    """Print the runs under a directory as a table, JSON or CSV."""
    from peftkit.rundir.table import find_runs, format_table, sort_rows, to_csv, to_json

    rows = sort_rows(find_runs(args.directory), args.sort, args.reverse)
    if args.csv:
        sys.stdout.write(to_csv(rows))
    else:
        print(to_json(rows) if args.json else format_table(rows))


def add_plot(verbs: Verbs) -> None:
    """Declare `peftkit plot RUN ... [--metric loss|eval_*] [--out FILE.png|FILE.svg]`."""
    plot = verb(verbs, "plot", cmd_plot, "draw the loss or an evaluation curve of one or several runs on one figure")
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--metric", default="loss",
                      help="loss (training, and validation where the run evaluated) or a validation score: "
                           "eval_loss, eval_accuracy, eval_f1 … (default: loss)")
    plot.add_argument("--out", help=f"the picture to write, .png or .svg (default: {PLOT_DEFAULT} here, not "
                                    "replacing a file of that name)")


PLOT_DEFAULT = "curves.png"


def cmd_plot(args: argparse.Namespace) -> None:
    """Draw the runs' curves of ``--metric`` into one picture and say where it is."""
    from peftkit.rundir.metrics import saved_metrics
    from peftkit.rundir.plot import figure, save

    try:
        import matplotlib  # noqa: F401 - an extra
    except ImportError:
        raise PeftkitError("plot needs matplotlib; pip install 'peftkit[bench]'") from None
    out = Path(args.out or PLOT_DEFAULT)
    if args.out is None and out.exists():
        raise PeftkitError(f"'{out}' already exists and is not replaced; name the picture with --out")
    if out.is_dir():
        raise PeftkitError(f"--out '{out}' is a directory, expected a .png or .svg file")
    if not out.parent.is_dir():
        raise PeftkitError(f"--out: directory '{out.parent}' does not exist")
    paths = [Path(run) for run in args.runs]
    names = [p.name or str(p) for p in paths]
    if len(set(names)) < len(names):  # two runs of the same name in different folders: their paths tell them apart
        names = [str(p) for p in paths]
    runs = [(name, saved_metrics(path)) for name, path in zip(names, paths, strict=True)]
    save(figure(runs, args.metric), out)
    print(f"{args.metric} of {len(runs)} run{'s' if len(runs) > 1 else ''} drawn in {out}")
