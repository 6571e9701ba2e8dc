"""Export (merged weights or a clean adapter, parity-checked) and fusion of runs."""

from peftkit.export.fuse import fuse_runs
from peftkit.export.merge import export_run

__all__ = ["export_run", "fuse_runs"]
