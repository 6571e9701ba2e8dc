"""The offline GPU proof that `benchmarks/gpu.sh` runs: its cells, the wheels that travel with it, the dry run.

    python3 -m tools.gpu_proof fetch-wheels                  # a CPU machine with the package index
    python3 -m tools.gpu_proof check [--fixtures DIR]        # the dry run: cells, wheels, fixtures
    python3 -m tools.gpu_proof run --output-dir DIR [--quick] [--tiny]
    python3 -m tools.gpu_proof cell SPEC.json RESULT.json    # one cell, in its own process (run starts it)

The GPU machine's Python holds torch (CUDA), an older transformers and most of the scientific stack, but not
bitsandbytes, datasets, pydantic or seqeval, and it has no network: ``WHEELS`` are what peftkit needs there beyond
what it holds, fetched once into ``benchmarks/gpu-wheels/`` (ignored; it travels with the checkout). The cells train
on random-init fixtures built there (``tools.gpu_fixtures``), each in its own process (a cell that runs out of GPU
memory ends its process only), and print one line each; a full run writes RESULTS.md's GPU rows.

The A/B of the QLoRA preparation selects its mode through one seam: the name ``get_peft_model`` in
``peftkit.methods.base``, which ``PeftMethod.apply`` calls to wrap the base. In a cell's process it is replaced by a
wrapper that, in mode ``upcast``, first runs peft's ``prepare_model_for_kbit_training`` (the preparation that casts
the base's non-quantized weights to float32) and in mode ``freeze-only`` adds nothing, so the code's own
freeze-only path runs; either way it counts the parameters by dtype after wrapping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import gpu_fixtures

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = ROOT / "benchmarks" / "gpu-wheels"
WHEEL_LIMIT = 60 * 2**20
#: Carried to the GPU machine (Python 3.12, x86-64): what peftkit imports that its Python lacks (bitsandbytes,
#: datasets, pydantic, seqeval), the tested transformers and peft (it holds transformers 5.17, below the tested
#: range, and a peft of its own), and their dependencies it lacks. Pinned to the versions CI tests with; datasets'
#: pyarrow, pandas, fsspec and xxhash are already there.
WHEELS = (
    ("bitsandbytes", "0.50.2"), ("transformers", "5.24.0"), ("peft", "0.21.2"), ("datasets", "5.2.0"),
    ("dill", "0.4.1"), ("multiprocess", "0.70.19"), ("pydantic", "2.14.4"), ("pydantic-core", "2.50.5"),
    ("annotated-types", "0.8.0"), ("typing-inspection", "0.4.5"), ("typing-extensions", "4.16.0"),
    ("seqeval", "1.2.2"),
)
#: Published as an sdist only: built into a (pure-Python) wheel here.
FROM_SDIST = ("seqeval",)
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
          "--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64",
          "--platform", "manylinux2014_x86_64"]

SUITE = "gpu-proof"
STEPS, QUICK_STEPS = 20, 2
CELL_TIMEOUT = 150
#: Seconds the cells may take together (a cell is stopped at the end of it); cells left then are skipped, and no
#: rows are written. With the install, the checks and the fixtures the whole script stays within 8 minutes.
CELLS_BUDGET = 360
MIN_CELL_SECONDS = 20
PREPARATIONS = ("upcast", "freeze-only")
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
GIB = 2**30


@dataclass(frozen=True)
class ProofCell:
    """One training run of the proof: its recipe and, for an arm of the A/B, the QLoRA preparation."""

    id: str
    what: str
    recipe: dict[str, Any] = field(repr=False)
    prep: str | None = None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section, values in extra.items():
        merged[section] = {**merged.get(section, {}), **values}
    return merged


def cells(fixtures: Path, quick: bool = False) -> list[ProofCell]:
    """The proof's cells on the fixtures in ``fixtures``, in the order they run."""
    steps = QUICK_STEPS if quick else STEPS
    train = {"max_steps": steps, "batch_size": 8, "eval_batch_size": 8, "warmup": 0, "logging_steps": 5,
             "eval_strategy": "no", "save_strategy": "no"}
    split = {"validation_size": 16, "test_size": 16, "max_eval_samples": 16, "max_train_samples": 8 * steps}
    sft = {"task": {"head": "causal_lm", "template": "plain", "test_samples": 0},
           "data": {"source": str(fixtures / gpu_fixtures.SFT), "max_length": 512, **split}, "train": train}
    classify = {"task": {"head": "sentiment"},
                "data": {"source": str(fixtures / gpu_fixtures.CLASSIFY), "max_length": 256, **split},
                "train": train}
    big = {"model": {"name": str(fixtures / "qwen2.5-7b-2l"), "dtype": "bfloat16"}}
    small = {"model": {"name": str(fixtures / "qwen2.5-1.5b-4l"), "dtype": "bfloat16"}}
    lora = {"name": "lora", "r": 16, "alpha": 32,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    qlora = _merge(_merge(sft, big), {"method": {**lora, "name": "qlora"},
                                      "quantization": {"mode": "4bit", "quant_type": "nf4"}})
    oom = _merge(_merge(sft, big), {"method": {"name": "full"},
                                    "data": {"max_length": 4096, "padding": "max_length", "max_train_samples": 64},
                                    "train": {"batch_size": 64, "max_steps": 1, "gradient_checkpointing": False}})
    return [
        ProofCell("qlora-auto", "QLoRA NF4 r16, 7B width / 2 layers, SFT, every `auto` resolved by the GPU", qlora),
        ProofCell("qlora-ckpt", "the same with gradient checkpointing on",
                  _merge(qlora, {"train": {"gradient_checkpointing": True}})),
        ProofCell("lora-bf16", "LoRA r16 on bf16 weights, 1.5B width / 4 layers, SFT",
                  _merge(_merge(sft, small), {"method": lora})),
        ProofCell("lora-packing", "the same with padding-free packing (task.packing)",
                  _merge(_merge(sft, small), {"method": lora, "task": {"packing": True}})),
        ProofCell("full-bf16", "full fine-tuning in bf16, 1.5B width / 4 layers, classification",
                  _merge(_merge(classify, small), {"method": {"name": "full"}})),
        ProofCell("fp16-older", "fp16 mixed precision and sdpa (what `auto` resolves on a pre-Ampere GPU) on "
                  "fp16 weights: LoRA, classification",
                  _merge(_merge(classify, small), {"model": {"dtype": "float16", "attn_implementation": "sdpa"},
                                                   "method": lora, "train": {"precision": "fp16"}})),
        ProofCell("oom", "deliberately too big: full FT, 7B width, 64 x 4096 tokens, no checkpointing", oom),
        *(ProofCell(f"ab-{mode}", f"A/B of the QLoRA preparation: qlora-auto with mode {mode}", qlora, prep=mode)
          for mode in PREPARATIONS),
    ]


# ---- wheels ------------------------------------------------------------------------------------------------------

def wheel_file(directory: Path, name: str, version: str) -> Path | None:
    """The wheel of ``name`` ``version`` in ``directory``, if it is there."""
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    found = [p for p in directory.glob("*.whl") if p.name.lower().startswith(stem)] if directory.is_dir() else []
    return found[0] if found else None


def fetch_wheels(directory: Path = WHEEL_DIR) -> int:
    """Download (or build) every wheel of ``WHEELS`` not yet in ``directory``; returns the check's exit code."""
    directory.mkdir(parents=True, exist_ok=True)
    missing = [(n, v) for n, v in WHEELS if wheel_file(directory, n, v) is None]
    binary = [f"{n}=={v}" for n, v in missing if n not in FROM_SDIST]
    source = [f"{n}=={v}" for n, v in missing if n in FROM_SDIST]
    pip = [sys.executable, "-m", "pip"]
    if binary:
        subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", *TARGET, "-d", str(directory), *binary],
                       check=True)
    if source:
        subprocess.run([*pip, "wheel", "--no-deps", "--no-binary", ",".join(FROM_SDIST), "-w", str(directory),
                        *source], check=True)
    problems = check_wheels(directory)[1]
    for problem in problems:
        print(f"gpu_proof: error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def check_wheels(directory: Path = WHEEL_DIR) -> tuple[list[str], list[str]]:
    """(lines describing the wheels, problems): every wheel present, nothing else there, under ``WHEEL_LIMIT``."""
    lines, problems, total = [], [], 0
    for name, version in WHEELS:
        path = wheel_file(directory, name, version)
        if path is None:
            problems.append(f"wheel {name} {version} is missing from {directory}")
            continue
        total += path.stat().st_size
        lines.append(f"  {path.name}  {path.stat().st_size / 2**20:.1f} MiB")
    known = {wheel_file(directory, n, v) for n, v in WHEELS}
    extra = sorted(p.name for p in directory.glob("*.whl") if p not in known) if directory.is_dir() else []
    if extra:
        problems.append(f"{directory} holds wheels not in the list (an install takes one version of each): "
                        f"{', '.join(extra)}")
    if total > WHEEL_LIMIT:
        problems.append(f"the wheels weigh {total / 2**20:.1f} MiB, over the {WHEEL_LIMIT / 2**20:.0f} MiB limit")
    lines.insert(0, f"wheels ({directory}, Python 3.12 x86-64): {len(WHEELS) - sum('missing' in p for p in problems)}"
                    f" of {len(WHEELS)} present, {total / 2**20:.1f} MiB (limit {WHEEL_LIMIT / 2**20:.0f} MiB)")
    return lines, problems


def unmet_requirements(directory: Path = WHEEL_DIR) -> list[str]:
    """Requirements of the carried wheels that neither another carried wheel nor this Python meets: what may
    break on the GPU machine (run there after the install, it reads that Python's versions)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    carried = {canonicalize_name(n): v for n, v in WHEELS}
    unmet = []
    for name, version in WHEELS:
        path = wheel_file(directory, name, version)
        if path is None:
            continue
        with zipfile.ZipFile(path) as archive:
            meta = next(m for m in archive.namelist() if m.endswith(".dist-info/METADATA"))
            lines = archive.read(meta).decode("utf-8").splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            wanted = canonicalize_name(requirement.name)
            try:
                have = carried.get(wanted) or metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                have = None
            if have is None or not requirement.specifier.contains(have, prereleases=True):
                unmet.append(f"{name} {version} needs {requirement.name}{requirement.specifier}; "
                             f"{'found ' + have if have else 'not installed'}")
    return unmet


# ---- dry run -----------------------------------------------------------------------------------------------------

def fixture_problems(fixtures: Path, tiny: bool) -> tuple[list[str], list[str]]:
    """(lines, problems) about the fixtures: their sources shipped with peftkit; once built, every file there."""
    from peftkit.model.config import HUB_CONFIGS

    lines, problems = [], []
    for name, (source, layers) in gpu_fixtures.MODELS.items():
        config = HUB_CONFIGS / source / "config.json"
        if config.is_file():
            fields = json.loads(config.read_text(encoding="utf-8"))
            lines.append(f"  {name}: from {config.relative_to(ROOT)} (hidden {fields['hidden_size']}, "
                         f"{layers} of {fields['num_hidden_layers']} layers, vocabulary {fields['vocab_size']:,})")
        else:
            problems.append(f"fixture source {config} is missing")
    manifest = gpu_fixtures.read_manifest(fixtures)
    if manifest is None:
        lines.append(f"  not built yet in {fixtures}: benchmarks/gpu.sh builds them on the GPU machine")
        return lines, problems
    missing = [name for name in gpu_fixtures.fixture_files() if not (fixtures / name).exists()]
    if missing:
        problems.append(f"fixtures in {fixtures} lack {', '.join(missing)}; delete the folder to rebuild it")
    if manifest["tiny"] != tiny:
        problems.append(f"fixtures in {fixtures} are {'tiny' if manifest['tiny'] else 'full-size'}; this run "
                        f"wants {'tiny' if tiny else 'full-size'} ones (delete the folder to rebuild it)")
    lines.append(f"  built in {fixtures}{' (tiny)' if manifest['tiny'] else ''}: {', '.join(manifest['files'])}")
    return lines, problems


def recipe_problems(fixtures: Path, quick: bool) -> list[str]:
    """Every cell's recipe validated against built fixtures (the model folders must exist to validate)."""
    from peftkit.config.load import recipe_from_dict
    from peftkit.errors import PeftkitError

    problems = []
    for cell in cells(fixtures, quick):
        try:
            recipe_from_dict(cell.recipe, source=f"cell {cell.id}")
        except PeftkitError as exc:
            problems.append(str(exc))
    return problems


def check(fixtures: Path, quick: bool = False, tiny: bool = False, wheels: Path = WHEEL_DIR) -> int:
    """The dry run: list the cells, check the wheels, the fixtures and the A/B's seam; 0 when all is there."""
    from peftkit.methods import base

    listed = cells(fixtures, quick)
    print(f"GPU proof: {len(listed)} cells, {QUICK_STEPS if quick else STEPS} optimizer steps each"
          f"{' (--quick: no RESULTS.md rows)' if quick else ''}; skipped: none (packing exists: task.packing)")
    for cell in listed:
        print(f"  {cell.id:<17} {cell.what}")
    lines, problems = check_wheels(wheels)
    fixture_lines, fixture_issues = fixture_problems(fixtures, tiny)
    problems += fixture_issues
    lines += ["fixtures (random init, built offline from peftkit/model/hub_configs/):", *fixture_lines]
    if gpu_fixtures.read_manifest(fixtures) is not None and not fixture_issues:
        problems += recipe_problems(fixtures, quick)
        lines.append("  every cell's recipe validates against them")
    seam = callable(getattr(base, "get_peft_model", None))
    lines.append(f"A/B seam peftkit.methods.base.get_peft_model: {'found' if seam else 'MISSING'}")
    if not seam:
        problems.append("peftkit.methods.base no longer calls get_peft_model by that name: the A/B has no seam")
    print("\n".join(lines))
    for problem in problems:
        print(f"gpu_proof: error: {problem}", file=sys.stderr)
    if any("wheel" in p for p in problems):
        print("gpu_proof: fetch the wheels on a machine with the package index: bash benchmarks/gpu.sh --fetch-wheels",
              file=sys.stderr)
    return 2 if problems else 0


# ---- the run -----------------------------------------------------------------------------------------------------

def _gib(value: float | None) -> str:
    return f"{value / GIB:.1f} GiB" if value else "-"


def _peaks(memory: dict[str, Any]) -> str:
    return (f"peak {_gib(memory.get('cuda_allocated_peak_bytes'))} allocated, "
            f"{_gib(memory.get('cuda_reserved_peak_bytes'))} reserved")


def settings_text(settings: dict[str, Any] | None) -> str:
    """The resolved device settings in a few words."""
    if not settings:
        return "settings unknown"
    compute = settings.get("quantization.compute_dtype")
    return (f"{settings['train.precision']}, {settings['train.optim']}"
            f"{', 4-bit compute ' + compute if compute else ''}, {settings['model.attn_implementation']}, "
            f"checkpointing {'on' if settings['train.gradient_checkpointing'] is True else 'off'}")


def cell_line(result: dict[str, Any]) -> str:
    """One line per cell: resolved settings, tokens/s, peak allocated and reserved, predicted, status."""
    from peftkit.bench.cell import status_label

    speed, memory = result.get("speed") or {}, result.get("memory") or {}
    tokens = speed.get("tokens_per_second")
    return (f"{result['cell']:<17} {settings_text(result.get('settings'))} | "
            f"{f'{tokens:,.0f}' if tokens else '-'} tokens/s | {_peaks(memory)} | predicted "
            f"{_gib(memory.get('predicted_bytes'))} | {status_label(result)}")


def _count(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 100_000 else f"{n / 1e3:,.1f}k"


def ab_line(result: dict[str, Any]) -> str:
    """One arm of the A/B: dtypes after the preparation, ms per step, peaks."""
    prep = result.get("qlora_prep") or {}
    census = prep.get("dtypes") or {}
    dtypes = "; ".join(f"{kind} " + ", ".join(f"{d} {_count(n)}" for d, n in sorted(counts.items()))
                       for kind, counts in census.items() if counts) or "dtypes unknown"
    speed, memory = result.get("speed") or {}, result.get("memory") or {}
    step = speed.get("median_step_seconds")
    per_step = f"{1000 * step:.0f} ms/step (median)" if step else "- ms/step"
    return f"  {result['cell'].removeprefix('ab-'):<12} {dtypes} | {per_step} | {_peaks(memory)}"


def run_cell_process(cell: ProofCell, directory: Path, timeout: float) -> dict[str, Any]:
    """Run one cell in a fresh Python process; a crash or timeout becomes a failed result."""
    from peftkit.bench.cell import failed_result, write_json_atomic

    spec = {"suite": SUITE, "cell": cell.id, "variant": cell.id, "values": {}, "labels": {}, "recipe": cell.recipe,
            "output_dir": str(directory / "runs" / cell.id), "keep_run": False, "baseline": False,
            "qlora_prep": cell.prep}
    spec_path, out = directory / "specs" / f"{cell.id}.json", directory / "cells" / f"{cell.id}.json"
    write_json_atomic(spec_path, spec)
    out.unlink(missing_ok=True)  # this run's result or none: never the last run's
    log = directory / "logs" / f"{cell.id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as handle:
        try:
            code: int | str = subprocess.run(
                [sys.executable, "-m", "tools.gpu_proof", "cell", str(spec_path), str(out)], stdout=handle,
                stderr=subprocess.STDOUT, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if not out.is_file():
        reason = f"stopped after {timeout:.0f} s" if code == "timeout" else f"exit code {code}"
        write_json_atomic(out, failed_result(spec, f"cell process ended without a result: {reason}; see {log}"))
    return json.loads(out.read_text(encoding="utf-8"))


def run(directory: Path, fixtures: Path, quick: bool = False, tiny: bool = False,
        only: list[str] | None = None, rows: Path | None = RESULTS_MD) -> int:
    """Run the cells (``only`` these ids), one line each, then the A/B; a full run writes ``rows``' GPU rows."""
    if gpu_fixtures.read_manifest(fixtures) is None or fixture_problems(fixtures, tiny)[1]:
        print(f"gpu_proof: error: fixtures in {fixtures} are missing or incomplete; "
              f"python3 -m tools.gpu_fixtures {fixtures}{' --tiny' if tiny else ''}", file=sys.stderr)
        return 2
    invalid = recipe_problems(fixtures, quick)
    for problem in invalid:
        print(f"gpu_proof: error: {problem}", file=sys.stderr)
    if invalid:
        return 2
    chosen = [c for c in cells(fixtures, quick) if not only or c.id in only]
    started, results, skipped = time.perf_counter(), [], []
    for cell in chosen:
        left = CELLS_BUDGET - (time.perf_counter() - started)
        if left < MIN_CELL_SECONDS:
            skipped.append(cell.id)
            print(f"{cell.id:<17} skipped: the cells' {CELLS_BUDGET} s budget is spent", flush=True)
            continue
        result = run_cell_process(cell, directory, min(CELL_TIMEOUT, left))
        results.append(result)
        print(cell_line(result), flush=True)
    arms = [r for r in results if r["cell"] in {f"ab-{mode}" for mode in PREPARATIONS}]
    if arms:
        print("A/B of the QLoRA preparation (qlora-auto's recipe; parameters by dtype after the preparation):")
        for result in arms:
            print(ab_line(result))
        freeze = [(r.get("qlora_prep") or {}).get("dtypes") or {} for r in arms if r["cell"] == "ab-freeze-only"]
        if freeze and (freeze[0].get("frozen") or {}).get("float32"):
            print("  note: the freeze-only arm holds float32 frozen weights: this checkout's PeftMethod.apply still "
                  "upcasts a quantized base before the seam")
    print(f"{len(results)} cells in {time.perf_counter() - started:.0f} s")
    full = not quick and not tiny and not only and not skipped
    if full and rows is not None:
        from tools import gpu_rows

        gpu_rows.write(rows, [directory], "benchmarks/gpu.sh")
        print(f"GPU rows written to {rows}")
    else:
        print("not a full run: RESULTS.md left as it is")
    return 0


# ---- one cell's process ------------------------------------------------------------------------------------------

def dtype_census(model: Any) -> dict[str, dict[str, int]]:
    """Parameter counts by dtype, frozen and trainable apart; packed 4-bit weights count as ``4bit-packed`` (their
    bytes: two weights each)."""
    census: dict[str, dict[str, int]] = {"frozen": {}, "trainable": {}}
    for parameter in model.parameters():
        kind = census["trainable" if parameter.requires_grad else "frozen"]
        packed = type(parameter).__name__ == "Params4bit"
        dtype = "4bit-packed" if packed else str(parameter.dtype).removeprefix("torch.")
        kind[dtype] = kind.get(dtype, 0) + parameter.numel()
    return census


def select_preparation(mode: str | None, census: dict[str, Any]) -> None:
    """The seam: replace ``peftkit.methods.base.get_peft_model`` with a wrapper that prepares a quantized base the
    ``mode`` way (``upcast``: peft's prepare_model_for_kbit_training first; ``freeze-only`` or None: nothing added)
    and records the parameters by dtype into ``census``."""
    from peft import prepare_model_for_kbit_training

    from peftkit.methods import base

    wrap = base.get_peft_model

    def get_peft_model(model: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        if mode == "upcast" and getattr(model, "is_quantized", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        wrapped = wrap(model, config, *args, **kwargs)
        if not any(parameter.is_meta for parameter in wrapped.parameters()):  # the estimate's models are on meta
            census.update(dtype_census(wrapped))
        return wrapped

    base.get_peft_model = get_peft_model


def cell_main(spec_path: str, result_path: str) -> int:
    """Run one cell through peftkit's benchmark cell, its QLoRA preparation selected, the dtypes recorded."""
    from peftkit.bench import cell
    from peftkit.bench.cell import write_json_atomic

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    census: dict[str, Any] = {}
    select_preparation(spec.get("qlora_prep"), census)
    code = cell.main([spec_path, result_path])
    result = json.loads(Path(result_path).read_text(encoding="utf-8"))
    result["qlora_prep"] = {"mode": spec.get("qlora_prep") or "as coded", "dtypes": census}
    write_json_atomic(Path(result_path), result)
    return code


def main(argv: list[str] | None = None) -> int:
    """The subcommands above; see the module's docstring."""
    args = list(sys.argv[1:] if argv is None else argv)
    command, rest = (args[0], args[1:]) if args else ("", [])

    def value(flag: str, default: str) -> str:
        return rest[rest.index(flag) + 1] if flag in rest else default

    directory = Path(value("--output-dir", "runs/gpu-proof"))
    wheels = Path(value("--wheels", os.environ.get("PEFTKIT_GPU_WHEELS") or str(WHEEL_DIR)))
    fixtures = Path(value("--fixtures", str(directory / "fixtures")))
    quick, tiny = "--quick" in rest, "--tiny" in rest
    if command == "fetch-wheels":
        return fetch_wheels(wheels)
    if command == "check":
        return check(fixtures, quick, tiny, wheels)
    if command == "requirements":
        for line in unmet_requirements(wheels):
            print(f"warning: {line}")
        return 0
    if command == "run":
        only = value("--only", "").split(",") if "--only" in rest else None
        return run(directory, fixtures, quick, tiny, only)
    if command == "cell" and len(rest) == 2:
        return cell_main(*rest)
    print("usage: python3 -m tools.gpu_proof fetch-wheels | check | requirements | run [--output-dir DIR] "
          "[--fixtures DIR] [--wheels DIR] [--quick] [--tiny] [--only ID,…] | cell SPEC RESULT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
