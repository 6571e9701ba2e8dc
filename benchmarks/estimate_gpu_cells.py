"""Predict the GPU cells of a suite again with this checkout's estimate, beside what they measured, on any machine.

    python benchmarks/estimate_gpu_cells.py SUITE.yaml RESULTS.csv [GIB] [MAJOR.MINOR]

RESULTS.csv is the `peftkit bench` CSV of a run on a CUDA device (`measure` = cuda_allocated), for example
benchmarks/results/ner-h200_results.csv with benchmarks/ner.yaml. Each variant's first measured cell is predicted
for a CUDA device of GIB GiB and compute capability MAJOR.MINOR (default: the H200's 139 GiB and 9.0) from the
suite's recipe for that cell; `peftkit bench report` predicts again only cells measured on this machine's kind.
The data is tokenized here to find the longest batch, so the suite's data must be in the cache.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from peftkit.bench.suite import expand, load_suite
from peftkit.config.load import recipe_from_dict
from peftkit.hardware.auto import estimate_on
from peftkit.hardware.device import Device

MIB = 2**20


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    suite_path, results_path = Path(argv[0]), Path(argv[1])
    gib = float(argv[2]) if len(argv) > 2 else 139.0
    major, minor = (int(part) for part in (argv[3] if len(argv) > 3 else "9.0").split("."))
    gpu = Device("cuda", "CUDA device", int(gib * 2**30), (major, minor))
    cells = {cell.id: cell for cell in expand(load_suite(suite_path))}
    seen: set[str] = set()
    with results_path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["measure"] != "cuda_allocated" or row["variant"] in seen or row["cell"] not in cells:
                continue
            seen.add(row["variant"])
            measured, recorded = int(row["peak_bytes"]), int(row["predicted_bytes"])
            predicted = estimate_on(recipe_from_dict(cells[row["cell"]].recipe), gpu)
            print(f"{row['cell']}: measured {measured / MIB:,.0f} MiB; recorded estimate {recorded / MIB:,.0f} "
                  f"({100 * (recorded - measured) / measured:+.0f} %); this checkout {predicted.total / MIB:,.0f} "
                  f"({100 * (predicted.total - measured) / measured:+.0f} %), activations "
                  f"{predicted.activations / MIB:,.0f} MiB ({predicted.activations_from})")
    if not seen:
        print(f"{results_path}: no cell measured on a CUDA device matches a cell of {suite_path}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
