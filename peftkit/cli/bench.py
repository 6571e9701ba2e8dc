"""The `bench` verb: run a benchmark suite, or render a bench directory's report again."""

from __future__ import annotations

import argparse

from peftkit.cli.common import Verbs, verb
from peftkit.errors import PeftkitError


def add_bench(verbs: Verbs) -> None:
    """Declare `peftkit bench SUITE.yaml [--quick] …` and `peftkit bench report DIR [--re-estimate]`."""
    bench = verb(verbs, "bench", cmd_bench,
                 "run a benchmark suite (`bench SUITE.yaml`) or re-render one (`bench report DIR`)")
    bench.add_argument("suite", help="suite YAML file (benchmarks/*.yaml), or `report`")
    bench.add_argument("directory", nargs="?", help="with `report`: the bench directory to render")
    bench.add_argument("--quick", action="store_true", help="the suite's smoke size (what CI runs)")
    bench.add_argument("--output-dir", help="where results go; default runs/bench-<suite>[-quick]")
    bench.add_argument("--retry-failed", action="store_true", help="run failed cells again (cells with results are "
                       "otherwise skipped, so an interrupted suite resumes)")
    bench.add_argument("--keep-runs", action="store_true", help="keep each cell's run directory (weights included)")
    bench.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="cells at a time, each in its own process (a GPU with room, spare CPU cores); times "
                            "then share the machine, and the report says so")
    bench.add_argument("--strict", action="store_true", help="exit with an error when a cell failed (CI)")
    bench.add_argument("--re-estimate", action="store_true",
                       help="with `report`: predict every cell's memory again with this checkout's estimate "
                            "(measurements are kept; the report names the commit that predicted)")


def cmd_bench(args: argparse.Namespace) -> None:
    """Run a suite's cells (resuming an interrupted one) and render its report, or only render the report."""
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
                        keep_runs=args.keep_runs, jobs=args.jobs)
    _, files = render(outcome.directory)
    print(f"{len(outcome.ran)} cells run ({len(outcome.failed)} failed), {len(outcome.skipped)} already done; "
          f"report: {files[0]}")
    if args.strict and outcome.failed:
        raise PeftkitError(f"bench --strict: {len(outcome.failed)} cell(s) failed: {', '.join(outcome.failed)}")
