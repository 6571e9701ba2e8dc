"""Predict a suite's recorded cells again with this checkout's estimate, beside the peaks they measured.

    python benchmarks/estimate_cells.py SUITE.yaml RESULTS.csv [KEY=VALUE ...] [--gpu-gib 139.8] [--capability 9.0]

RESULTS.csv is a `peftkit bench` CSV (for example benchmarks/results/ner-h200_results.csv with benchmarks/ner.yaml).
Each cell's recipe is the suite's for that cell id, with KEY=VALUE overrides applied (for a run made when a default
differed, e.g. `train.precision=fp32` for CPU runs from before `auto` meant bf16 autocast for LoRA), and is set
beside the peak the cell measured: cells measured on a CUDA device (`measure` cuda_allocated) are predicted for a
CUDA device of --gpu-gib GiB and compute capability --capability (default: the H200), on any machine; cells
measured on a CPU (private memory) for this machine's CPU, whose constants the estimate was fitted on, so only on
a CPU. The last line counts the cells within ±15 %. `peftkit bench report` predicts again only the cells of a run
directory measured on this machine's kind of device. The data is tokenized here to find the longest batch: the
suite's data must be cached.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from peftkit.bench.suite import expand, load_suite
from peftkit.config.load import recipe_from_dict
from peftkit.config.overrides import apply_overrides, parse_override
from peftkit.errors import PeftkitError
from peftkit.hardware import device as devices
from peftkit.hardware.auto import estimate_on
from peftkit.hardware.estimate import MemoryEstimate

MIB = 2**20
TOLERANCE = 15.0
H200 = (139.8, (9, 0))  # the GiB and compute capability torch reports for the project's GPU


def compute_capability(text: str) -> tuple[int, int]:
    """``MAJOR.MINOR`` as two integers (an argparse type: anything else is a one-line usage error)."""
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"'{text}': expected MAJOR.MINOR, e.g. 9.0")
    return int(major), int(minor)


def cuda_device(gib: float, capability: tuple[int, int]) -> devices.Device:
    """A CUDA device of ``gib`` GiB and compute capability ``(major, minor)``, to predict GPU cells for."""
    return devices.Device("cuda", "CUDA device", int(gib * 2**30), capability)


def within(errors: list[float]) -> str:
    """The closing line: how many of the errors (%) are within the tolerance."""
    return f"{sum(abs(e) <= TOLERANCE for e in errors)} of {len(errors)} cells within ±{TOLERANCE:.0f} %"


def main(argv: list[str]) -> int:
    try:
        return compare(argv)
    except PeftkitError as exc:
        print(f"estimate_cells: {exc}", file=sys.stderr)
        return 2


def compare(argv: list[str]) -> int:
    """Print each recorded cell beside this checkout's prediction and the count within ±15 %; 2 if none matched."""
    parser = argparse.ArgumentParser(description="predict a suite's recorded cells again")
    parser.add_argument("suite", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("overrides", nargs="*", type=parse_override, help="KEY=VALUE, applied to every cell")
    parser.add_argument("--gpu-gib", type=float, default=H200[0])
    parser.add_argument("--capability", type=compute_capability, default=H200[1],
                        help="the CUDA device's compute capability, MAJOR.MINOR")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"estimate_cells: {args.results}: no such file", file=sys.stderr)
        return 2
    here = devices.current()
    targets = {"cuda_allocated": cuda_device(args.gpu_gib, args.capability),
               "private": here if here.kind == "cpu" else None}
    cells = {cell.id: apply_overrides(cell.recipe, dict(args.overrides)) for cell in expand(load_suite(args.suite))}
    predicted: dict[tuple[str, str], MemoryEstimate] = {}
    errors: list[float] = []
    with args.results.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            device = targets.get(row.get("measure") or "")
            if device is None or not row["predicted_bytes"] or row["cell"] not in cells:
                continue
            recipe = apply_overrides(cells[row["cell"]], {"train.seed": 0})  # seeds share one prediction
            key = (row["measure"], json.dumps(recipe, sort_keys=True, default=str))
            if key not in predicted:
                predicted[key] = estimate_on(recipe_from_dict(recipe), device)
            measured, recorded, now = int(row["peak_bytes"]), int(row["predicted_bytes"]), predicted[key]
            errors.append(100 * (now.total - measured) / measured)
            print(f"{row['cell']}: measured {measured / MIB:,.0f} MiB ({row['measure']}); recorded estimate "
                  f"{recorded / MIB:,.0f} ({100 * (recorded - measured) / measured:+.0f} %); this checkout "
                  f"{now.total / MIB:,.0f} ({errors[-1]:+.0f} %), activations {now.activations / MIB:,.0f} MiB "
                  f"({now.activations_from})")
    if not errors:
        print(f"{args.results}: no cell of {args.suite} with a measured peak this machine can predict "
              "(CPU cells are predicted on a CPU)")
        return 2
    print(within(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
