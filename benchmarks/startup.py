"""Start-up of the verbs that need no model: wall time and modules imported, per verb (issue 29).

    python benchmarks/startup.py [REPEAT]

Each verb runs as `python -m peftkit ARGS` in a fresh interpreter, REPEAT times (default 5): the median wall time,
then once more under `python -X importtime` for the number of modules it imports and whether torch, transformers
or peft is among them. The module count does not depend on the machine's load; the times do. The verbs read a
schema-error recipe, a folder of tiny fake runs and a destination for `cp`, made in a temporary folder.
Set PYTHONPATH to the checkout to measure (another checkout gives its "before" figures).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "peft")
VERBS = (
    ("--help",),
    ("recipes",),
    ("show", "sentiment-lora"),
    ("validate", "{bad}"),
    ("runs", "{runs}"),
    ("heads",),
    ("methods",),
    ("options",),
    ("models", "ls"),
    ("data", "ls"),
    ("cp", "sentiment-lora", "{dest}", "--force"),
)


def make_inputs(root: Path) -> dict[str, str]:
    """A recipe with a schema error, a folder with a finished and a broken fake run, a destination folder."""
    bad = root / "bad.yaml"
    bad.write_text("model: {name: minilm-l6}\ntrain: {epochs: many}\n")
    finished = root / "runs" / "finished"
    finished.mkdir(parents=True)
    (finished / "recipe.yaml").write_text("model: {name: minilm-l6}\nmethod: {name: lora}\n")
    (finished / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.875}}))
    (root / "runs" / "broken").mkdir()
    (root / "runs" / "broken" / "metrics.json").write_text("{")
    (root / "dest").mkdir()
    return {"bad": str(bad), "runs": str(root / "runs"), "dest": str(root / "dest")}


def wall_seconds(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "peftkit", *args], capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imported(args: list[str]) -> list[str]:
    """The modules `peftkit ARGS` imports, as `-X importtime` lists them."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "peftkit", *args], capture_output=True,
                          text=True, check=False)
    return re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, flags=re.MULTILINE)


def main(argv: list[str]) -> int:
    repeat = int(argv[0]) if argv else 5
    with tempfile.TemporaryDirectory(prefix="peftkit-startup-") as tmp:
        inputs = make_inputs(Path(tmp))
        print(f"| verb | wall s (median of {repeat}) | modules | torch / transformers / peft |")
        print("|---|---:|---:|---|")
        for verb in VERBS:
            args = [arg.format(**inputs) for arg in verb]
            modules = imported(args)
            heavy = ", ".join(m for m in HEAVY if m in modules) or "none"
            shown = " ".join(verb).replace("{bad}", "BAD.yaml").replace("{runs}", "RUNS").replace("{dest}", "DIR")
            print(f"| `peftkit {shown}` | {wall_seconds(args, repeat):.2f} | {len(modules)} | {heavy} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
