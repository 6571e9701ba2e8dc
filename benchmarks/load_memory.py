"""What loading a quantized base holds: private memory (RssAnon) against the resident set (VmRSS, RssFile).

    OMP_NUM_THREADS=1 python benchmarks/load_memory.py [--keep-mapped] [CELL ...]
                                              # default cells: qlora-nf4-358M qlora-8bit-358M

``--keep-mapped`` skips peftkit's release of the checkpoint (what transformers alone leaves), for comparison.

Each cell of benchmarks/scaling.yaml is loaded in a process of its own (its random-init checkpoint is built
first, in another), and /proc/self/status is read before and after ``load_base_model``, with the checkpoint
files still mapped listed. The goal: the resident set within 1.5× of private memory after a 4-bit load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).with_name("scaling.yaml")
MIB = 2**20


def measure(cell_id: str, keep_mapped: bool) -> dict:
    """Load one cell's base model here and return the figures."""
    from peftkit.bench.memory import read_status
    from peftkit.bench.suite import expand, load_suite
    from peftkit.config.load import recipe_from_dict
    from peftkit.model import loading
    from peftkit.model.loading import random_init_checkpoint
    from peftkit.model.weights import mapped_files
    from peftkit.registry import HEADS

    cell = next(c for c in expand(load_suite(SUITE)) if c.id == cell_id)
    recipe = recipe_from_dict(cell.recipe, source=cell_id)
    checkpoint = random_init_checkpoint(recipe.model)
    head = HEADS.get(recipe.task.head)(recipe.task)
    if keep_mapped:
        loading.release_checkpoint = lambda model: 0
    before = read_status()
    model, _ = loading.load_base_model(recipe.model, recipe.quantization, head, ["negative", "positive"])
    after = read_status()
    return {"cell": cell_id, "before": before, "after": after,
            "checkpoint_mapped": [p for p in mapped_files() if checkpoint and p.startswith(checkpoint)],
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(measure(argv[1], argv[2:] == ["--keep-mapped"])))
        return 0
    keep = ["--keep-mapped"] if "--keep-mapped" in argv else []
    cells = [a for a in argv if a != "--keep-mapped"] or ["qlora-nf4-358M", "qlora-8bit-358M"]
    print(f"checkpoint {'left as transformers maps it' if keep else 'released by peftkit'}")
    print("| cell | RssAnon MiB | RssFile MiB | VmRSS MiB | RSS / private | checkpoint still mapped |")
    print("|---|---|---|---|---|---|")
    for cell in cells:
        prepare = [sys.executable, __file__, "--one", cell, *keep]
        subprocess.run(prepare, check=True, capture_output=True)  # builds the checkpoint outside the measurement
        out = subprocess.run(prepare, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        figures = json.loads(out)
        a = figures["after"]
        print(f"| {cell} | {a['RssAnon'] / MIB:,.0f} | {a['RssFile'] / MIB:,.0f} | {a['VmRSS'] / MIB:,.0f} | "
              f"{a['VmRSS'] / a['RssAnon']:.2f} | {'yes' if figures['checkpoint_mapped'] else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
