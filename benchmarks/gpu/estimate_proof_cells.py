"""The GPU proof's cells predicted again by this checkout's estimate, beside the peaks a proof log recorded.

    python -m benchmarks.gpu.estimate_proof_cells [LOG] [--gpu-gib 139.8] [--capability 9.0]   # from the checkout

LOG (default benchmarks/gpu/proof-h200.log) is what `bash benchmarks/gpu.sh` printed on a GPU: one line per cell
with its allocated peak. Each cell that trained (not the A/B arms, not the out-of-memory cell) is predicted for a
CUDA device of that size and compute capability (default: the H200 the log came from), on any machine: the
fixtures are built again without weights (config, tokenizer, data: all the estimate reads) in a temporary folder.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from benchmarks.estimate_cells import H200, compute_capability, cuda_device, within
from peftkit.config.load import recipe_from_dict
from peftkit.hardware.auto import estimate_on
from tools import gpu_fixtures, gpu_proof

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30
CELL_LINE = re.compile(r"^(?P<cell>\S+)\s.*\| peak (?P<peak>[\d.]+) GiB allocated.* \| ok$")


def measured_peaks(log: Path) -> dict[str, float]:
    """Cell id → allocated peak in GiB, for each cell of the log that trained."""
    lines = log.read_text(encoding="utf-8").splitlines()
    return {m["cell"]: float(m["peak"]) for line in lines if (m := CELL_LINE.match(line))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="predict the GPU proof's cells again")
    parser.add_argument("log", nargs="?", type=Path, default=ROOT / "benchmarks" / "gpu" / "proof-h200.log")
    parser.add_argument("--gpu-gib", type=float, default=H200[0])
    parser.add_argument("--capability", type=compute_capability, default=H200[1],
                        help="the CUDA device's compute capability, MAJOR.MINOR")
    args = parser.parse_args(argv)
    if not args.log.is_file():
        print(f"estimate_proof_cells: {args.log}: no such file", file=sys.stderr)
        return 2
    peaks = measured_peaks(args.log)
    gpu = cuda_device(args.gpu_gib, args.capability)
    errors = []
    with tempfile.TemporaryDirectory() as folder:
        fixtures = Path(folder)
        for name in gpu_fixtures.MODELS:
            (fixtures / name).mkdir()
            gpu_fixtures.build_model(fixtures / name, name, tiny=False, weights=False)
        gpu_fixtures.build_sft(fixtures / gpu_fixtures.SFT)
        gpu_fixtures.build_classify(fixtures / gpu_fixtures.CLASSIFY)
        for cell in gpu_proof.cells(fixtures):
            if cell.prep or cell.id not in peaks:
                continue
            predicted = estimate_on(recipe_from_dict(cell.recipe), gpu).total / GIB
            errors.append(100 * (predicted - peaks[cell.id]) / peaks[cell.id])
            print(f"{cell.id}: measured {peaks[cell.id]:.1f} GiB allocated, this checkout {predicted:.2f} GiB "
                  f"({errors[-1]:+.0f} %)")
    if not errors:
        print(f"estimate_proof_cells: {args.log}: no cell line with an allocated peak", file=sys.stderr)
        return 2
    print(within(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
