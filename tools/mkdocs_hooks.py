"""MkDocs hook: serve benchmarks/RESULTS.md and its plots from where they live, so the site links them unchanged."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add benchmarks/RESULTS.md, benchmarks/results/*.png and the GPU proof's logs to the site at the same relative
    paths."""
    benchmarks = ROOT / "benchmarks"
    for path in [benchmarks / "RESULTS.md", *sorted((benchmarks / "results").glob("*.png")),
                 *sorted((benchmarks / "gpu").glob("*.log"))]:
        files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files
