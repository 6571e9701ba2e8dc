"""GPU rows of benchmarks/RESULTS.md: `python tools/gpu_rows.py RESULTS.md BENCH_DIR …` (run by benchmarks/gpu.sh).

Every cell result under each bench directory becomes one row: GPU name, package versions, suite and cell, status
(ok, out of memory, failed), samples/s, tokens/s, the allocator's allocated and reserved peaks, the estimate's
prediction, and the test metric. The rows replace what stands between the
``<!-- gpu-rows:start -->`` and ``<!-- gpu-rows:end -->`` markers (a section is appended when there are none).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from peftkit.bench.cell import status_label
from peftkit.bench.runner import load_results
from peftkit.errors import PeftkitError
from peftkit.rundir import atomic
from peftkit.rundir.metrics import main_metric

START, END = "<!-- gpu-rows:start -->", "<!-- gpu-rows:end -->"
HEADER = ("GPU", "torch / transformers / peft / bitsandbytes", "suite", "cell", "status", "samples/s", "tokens/s",
          "peak allocated MiB", "peak reserved MiB", "predicted MiB", "test metric")


def _mib(value: float | None) -> str:
    return f"{value / 2**20:,.0f}" if value else "-"


def _metric(result: dict[str, Any]) -> str:
    metrics = result.get("metrics") or {}
    key = main_metric(None, metrics)
    return f"{key} {metrics[key]:.4f}" if key else "-"


def row(result: dict[str, Any]) -> tuple[str, ...]:
    """One table row of a cell result."""
    provenance = result.get("provenance") or {}
    packages = provenance.get("packages") or {}
    versions = " / ".join(str(packages.get(n) or "-") for n in ("torch", "transformers", "peft", "bitsandbytes"))
    speed, memory = result.get("speed") or {}, result.get("memory") or {}
    samples, tokens = speed.get("samples_per_second"), speed.get("tokens_per_second")
    return (str(provenance.get("gpu") or provenance.get("device") or "-"), versions, str(result.get("suite", "-")),
            str(result.get("cell", "-")), status_label(result), f"{samples:.2f}" if samples else "-",
            f"{tokens:,.0f}" if tokens else "-", _mib(memory.get("cuda_allocated_peak_bytes")),
            _mib(memory.get("cuda_reserved_peak_bytes")), _mib(memory.get("predicted_bytes")),
            _metric(result) if result.get("status") == "ok" else "-")


def table(directories: list[Path]) -> str:
    """The Markdown table of every cell result under ``directories``; a CPU-only result is refused."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for directory in directories:
        for result in load_results(directory):
            device = (result.get("provenance") or {}).get("device")
            if device not in (None, "cuda"):
                raise PeftkitError(f"{directory}: cell {result.get('cell')} ran on {device}, not a CUDA GPU; "
                                   "GPU rows come from GPU runs only")
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row(result)) + " |")
    return "\n".join(lines)


def write(results_md: Path, directories: list[Path], command: str) -> None:
    """Put the rows of ``directories`` between the markers of ``results_md`` (appending a section if needed)."""
    body = f"{START}\nMeasured with `{command}`.\n\n{table(directories)}\n{END}"
    text = results_md.read_text(encoding="utf-8") if results_md.is_file() else ""
    pattern = re.compile(rf"{re.escape(START)}.*?{re.escape(END)}", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:
        text = text.rstrip("\n") + f"\n\n## GPU rows (benchmarks/gpu.sh)\n\n{body}\n"
    atomic.write_text(results_md, text)


def main(argv: list[str] | None = None) -> int:
    """`python tools/gpu_rows.py RESULTS.md DIR … [--command TEXT]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = "benchmarks/gpu.sh"
    if "--command" in args:
        at = args.index("--command")
        command = args[at + 1]
        del args[at:at + 2]
    if len(args) < 2:
        print("usage: python tools/gpu_rows.py RESULTS.md BENCH_DIR … [--command TEXT]", file=sys.stderr)
        return 2
    try:
        write(Path(args[0]), [Path(a) for a in args[1:]], command)
    except PeftkitError as exc:
        print(f"peftkit: error: {exc}", file=sys.stderr)
        return 2
    print(f"GPU rows written to {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
