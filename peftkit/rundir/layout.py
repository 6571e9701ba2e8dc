"""Every name peftkit gives a file or folder inside a run, export or sweep directory, in one place."""

from __future__ import annotations

# A run directory: its final files (metrics.json is written last, so it marks a finished run) …
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
#: The run's loss and evaluation curves, drawn at the end of training where matplotlib is installed.
CURVES_FILE = "curves.png"
#: The final files a run saves whatever its method (its weights and tokenizer files vary).
RUN_FILES = (RECIPE_FILE, METRICS_FILE, CARD_FILE)
#: The tokenizer's JSON files a run may hold (the tokenizer saves them; a run is loaded with them).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
#: The JSON files of a run's saved model: an adapter's or a model's config, the tokenizer's.
MODEL_JSON_FILES = ("adapter_config.json", "config.json", *TOKENIZER_FILES)
# … and what a run writes while it trains: checkpoints, a staging folder for the final save, the weights that
# sharded processes gather for it, a tracker's logs.
CHECKPOINTS_DIR = "checkpoints"
STAGING_DIR = ".staging"
GATHERED_DIR = ".gathered"
LOGS_DIR = "logs"
#: What a run may write into output_dir besides its final files; recorded in the manifest from the start.
WORKING_ENTRIES = (CHECKPOINTS_DIR, STAGING_DIR, GATHERED_DIR, LOGS_DIR)
#: Written by the first tracker into the logs directory: proof for --overwrite that peftkit wrote it.
TRACKING_MARKER = "peftkit-tracking.json"

# Inside a checkpoint: the Trainer's state, and what the Trainer does not keep (the loss summed over the run).
TRAINER_STATE = "trainer_state.json"
RUN_STATE = "peftkit_state.json"
#: A checkpoint is written into ``.staging-checkpoint-N`` and renamed into place once whole.
STAGING_PREFIX = ".staging-"

# An export directory: its parity report (its presence tells an export from a run).
REPORT_FILE = "export_report.json"

# A sweep directory: a trial trains in ``trial-NNN`` (removed once scored), then the table and the best recipe.
TRIAL_PREFIX = "trial-"
TRIALS_TABLE = "trials.csv"
BEST_RECIPE = "best.yaml"

# A `peftkit bench` output directory: the suite as run and one result file per cell (together they mark one), beside
# a cell's logs and, with --keep-runs, its run under runs/.
BENCH_SUITE_FILE = "suite.yaml"
BENCH_RESULTS_DIR = "cells"

# Bookkeeping in every directory peftkit writes: the manifest of what it wrote (what --overwrite may delete), the
# lock held while it writes, and the marker of a staging folder whose writer is alive.
MANIFEST = ".peftkit-manifest.json"
LOCK = ".peftkit-lock"
STAGING_MARKER = ".peftkit-staging"
BOOKKEEPING = (MANIFEST, LOCK)

#: What a run directory holds at some point of its life (checkpoints and logs before recipe.yaml is written).
RUN_MARKERS = (RECIPE_FILE, METRICS_FILE, CHECKPOINTS_DIR, STAGING_DIR, LOGS_DIR)
