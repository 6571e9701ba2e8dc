"""Measure the runtime overhead constants of `peftkit estimate` on this device kind.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [BENCH_DIR]

Runs benchmarks/overhead.yaml (calibration cells of each method family: short batches, where the fixed part dominates,
and long ones, where activations do), predicts each with this checkout's estimate, and fits what each phase held
(private memory on a CPU, allocated memory on a GPU) beyond the analytic terms:

- training: peak less floor, activations and transients = ``constant + share[family] × activations`` (least
  squares over the cells without gradient checkpointing, one constant, one share per method family) →
  ``RUNTIME_OVERHEAD[device]`` and ``ALLOCATOR_RETENTION[device]``;
- a quantized cell with gradient checkpointing (small activations): its training residual less the constant, per
  byte of its layers de-quantized → ``DEQUANT_RETENTION[device]``.

The evaluation phase (the floor less the gradients, the evaluation batch and the allocator's share of it, a
quantized layer de-quantized) is printed against the fitted figures as a check. The figures go into
peftkit/hardware/estimate.py. Measured once per device kind, never fitted to the cells the estimate is judged on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from peftkit.bench.report import predict_again
from peftkit.bench.runner import load_results, run_suite
from peftkit.hardware.estimate import FAMILIES

MIB = 2**20


def phase_peak(result: dict, phase: str) -> int | None:
    """What ``phase`` held above the baseline (private memory on a CPU, allocated on a GPU), None if it did not run."""
    figures = result["memory"].get("phases", {}).get(phase)
    if not figures:
        return None
    return figures["private_bytes"] if result["memory"]["device"] == "cpu" else figures["cuda_allocated_bytes"]


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path("runs/bench-overhead")
    run_suite(Path(__file__).with_name("overhead.yaml"), directory=directory)
    results = [r for r in load_results(directory) if r["status"] == "ok"]
    predict_again(directory, results)
    rows, targets, checkpointed = [], [], []
    for result in results:
        p = result["memory"]["predicted"]
        analytic = p["floor"] + p["activations"] + max(0, p["transient"] - p["activations"])
        residual = phase_peak(result, "train") - analytic
        if result["settings"]["train.gradient_checkpointing"] is True:
            checkpointed.append((residual, p["dequantized_total"]))
        else:
            rows.append([1.0, *(p["activations"] if p["family"] == f else 0.0 for f in FAMILIES)])
            targets.append(residual)
        print(f"{result['cell']} ({p['family']}): training held {phase_peak(result, 'train') / MIB:,.1f} MiB, "
              f"analytic terms {analytic / MIB:,.1f} (activations {p['activations'] / MIB:,.1f}), "
              f"residual {residual / MIB:,.1f} MiB")
    if len(rows) < len(FAMILIES) + 1:
        print("need at least one cell per method family and one more to fit")
        return 1
    solution = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)[0]
    constant, shares = solution[0], dict(zip(FAMILIES, solution[1:], strict=True))
    for result in results:
        p = result["memory"]["predicted"]
        held = phase_peak(result, "evaluate")
        if held is not None:
            expected = (p["floor"] - p["gradients"] + constant + p["evaluation"] + p["eval_retained"]
                        + p["eval_transient"])
            print(f"check, {result['cell']} evaluation: held {held / MIB:,.1f} MiB, fitted terms {expected / MIB:,.1f}")
    device = results[0]["memory"]["device"]
    print(f"{device}: RUNTIME_OVERHEAD {constant / MIB:,.0f} MiB; ALLOCATOR_RETENTION "
          + ", ".join(f"{f} {s:.2f}" for f, s in shares.items())
          + "".join(f"; DEQUANT_RETENTION {(r - constant) / d:.2f}" for r, d in checkpointed if d))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
