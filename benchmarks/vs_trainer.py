"""`peftkit train` against the Trainer + peft script a user would write (issue 30), as whole processes.

    python benchmarks/vs_trainer.py [--pairs 2] [--train-rows 3000] [--output-dir runs/vs-trainer] [--quick]

Both sides read the same CSV files: `--train-rows` training snippets and the 1,000 test snippets of the default
recipe's split (peftkit's own split of movie-snippets, written out once). Side A is
benchmarks/reference/trainer_peft.py (LoRA r 8 / alpha 16 / dropout 0.1 on query, key, value, dense with the head
trained, batch 32, lr 1e-3, 6 % warm-up, linear decay, weight decay 0.01, one epoch, max_length 96, dynamic
padding); side B is `peftkit train` of the same recipe with peftkit's defaults for everything the reference does
not set. Each side runs as its own process, alternating A B A B …, after one untimed warm-up of each (file cache,
the tokenized-split cache); the wall time of the whole process is measured from outside. Prints one row per run
and the medians: the ratio is A's median wall time over B's. Both sides train the same rows for the same epochs
and evaluate all test rows. `--quick`: 64 training rows, 32 test rows, one pair, no warm-up (a smoke run for CI).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "benchmarks" / "reference" / "trainer_peft.py"
MODEL = "minilm-l6"  # the catalogue model both sides train, whatever the default recipe's


def write_rows(out: Path, train_rows: int, test_rows: int) -> tuple[Path, Path]:
    """The default recipe's training and test snippets, as peftkit splits them, written as CSV files."""
    from peftkit.config.load import load_recipe
    from peftkit.data.pipeline import build_splits
    from peftkit.registry import plugins

    recipe = load_recipe("sentiment-lora", ["data.max_train_samples=null"])  # every training row, then the first N
    head, _ = plugins(recipe)
    splits = build_splits(recipe, head, None, parts=()).text
    paths = []
    for split, rows in (("train", train_rows), ("test", test_rows)):
        path = out / f"{split}.csv"
        data = splits[split].select(range(min(rows, len(splits[split]))))
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(zip(data["text"], data["label"], strict=True))
        paths.append(path)
    return paths[0], paths[1]


def peftkit_recipe(out: Path, train: Path, test: Path) -> Path:
    """sentiment-lora on the CSV files, at the reference's settings (its model and LoRA, one epoch, no validation
    split, BERT's own pooler, as AutoModelForSequenceClassification builds it)."""
    from peftkit.config.files import resolve_recipe_path

    recipe = yaml.safe_load(resolve_recipe_path("sentiment-lora").read_text())
    recipe["description"] = "sentiment-lora on the benchmark's CSV rows"
    recipe["model"] = {"name": MODEL}  # the reference's model and LoRA, whatever the recipe's
    recipe["method"].update({"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "key", "value", "dense"]})
    recipe["task"]["pooling"] = "pooler"  # the reference's model: BERT's own head on its pooler output
    recipe["data"] = {"files": {"train": str(train), "test": str(test)}, "validation_size": 0, "max_length": 96}
    recipe["train"].update({"epochs": 1, "batch_size": 32, "learning_rate": 1.0e-3, "warmup": 0.06,
                            "weight_decay": 0.01})
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def model_path() -> str:
    from peftkit.model.loading import resolve_model_path  # the catalogue's cached copy of MODEL

    return str(resolve_model_path(MODEL))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """Wall seconds of one whole process and the JSON object it printed last."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"vs_trainer: {' '.join(command[:4])} … failed ({done.returncode}):\n{done.stderr[-3000:]}")
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    return seconds, json.loads(last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--train-rows", type=int, default=3000)
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "vs-trainer")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    train_rows, test_rows, pairs = (64, 32, 1) if args.quick else (args.train_rows, 1000, args.pairs)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    train, test = write_rows(out, train_rows, test_rows)
    recipe = peftkit_recipe(out, train, test)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sides = {
        "trainer+peft": [sys.executable, str(REFERENCE), "--model", model_path(), "--train", str(train),
                         "--test", str(test), "--out", str(out / "reference")],
        "peftkit": [sys.executable, "-m", "peftkit", "train", str(recipe), "--output-dir", str(out / "peftkit"),
                    "--overwrite", "--json"],
    }
    print(f"{train_rows} training rows, {test_rows} test rows, {pairs} A/B pair(s); {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    if not args.quick:
        for command in sides.values():
            timed(command, env)
    results: dict[str, list[tuple[float, dict]]] = {name: [] for name in sides}
    print(f"{'run':<16}{'wall s':>8}{'train samples/s':>17}{'test accuracy':>15}", flush=True)
    for i in range(pairs):
        for name, command in sides.items():
            seconds, figures = timed(command, env)
            results[name].append((seconds, figures))
            samples = figures.get("train_samples_per_second") or figures.get("train", {}).get("samples_per_second")
            accuracy = figures.get("accuracy") or figures.get("test", {}).get("accuracy")
            print(f"{name + f' #{i + 1}':<16}{seconds:>8.1f}{samples:>17.1f}{accuracy:>15.4f}", flush=True)
    medians = {name: statistics.median(s for s, _ in runs) for name, runs in results.items()}
    print(f"median wall s: trainer+peft {medians['trainer+peft']:.1f}, peftkit {medians['peftkit']:.1f}; "
          f"ratio {medians['trainer+peft'] / medians['peftkit']:.2f}x")


if __name__ == "__main__":
    main()
