"""Measure the runtime overhead constants of `peftkit estimate` on this device kind.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [BENCH_DIR]

Runs benchmarks/overhead.yaml (three tiny cells: short batches, where the fixed part dominates, and long ones,
where activations do), predicts each with this checkout's estimate, and fits the measured peak (private memory
on a CPU, allocated memory on a GPU) less every analytic term as ``constant + share × activations`` (least
squares). The two figures go into ``RUNTIME_OVERHEAD[device]`` and ``ALLOCATOR_RETENTION[device]`` in
peftkit/hardware/estimate.py. Measured once per device kind, never fitted to the cells the estimate is judged on.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from peftkit.bench.report import predict_again
from peftkit.bench.runner import load_results, run_suite

MIB = 2**20


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path("runs/bench-overhead")
    run_suite(Path(__file__).with_name("overhead.yaml"), directory=directory)
    results = [r for r in load_results(directory) if r["status"] == "ok"]
    predict_again(directory, results)
    points = []
    for result in results:
        memory, predicted = result["memory"], result["memory"]["predicted"]
        analytic = predicted["floor"] + max(predicted["working_set"], predicted["transient"])
        residual = memory["peak_bytes"] - analytic
        points.append((predicted["working_set"], residual))
        print(f"{result['cell']}: measured {memory['peak_bytes'] / MIB:,.1f} MiB ({memory['measure']}, in "
              f"{memory['peak_phase']}), analytic terms {analytic / MIB:,.1f} MiB (activations or evaluation "
              f"{predicted['working_set'] / MIB:,.1f}), residual {residual / MIB:,.1f} MiB")
    if len(points) < 2:
        print("need at least two cells to fit")
        return 1
    xs, ys = zip(*points, strict=True)
    share, constant = statistics.linear_regression(xs, ys)
    print(f"{results[0]['memory']['device']}: runtime overhead {constant / MIB:,.0f} MiB + {share:.2f} × activations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
