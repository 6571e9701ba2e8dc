#!/usr/bin/env bash
# GPU benchmarks: on a CUDA machine, run sentiment-core, the GPU scaling suite (random-init Llama shapes of 1B / 3B /
# 8B; a size that does not fit is recorded as out of memory) and a QLoRA SFT on the catalogue's SmolLM2, then write
# their GPU rows (GPU name, versions, samples/s, peak allocated memory, test metric) into benchmarks/RESULTS.md.
#
#   benchmarks/gpu.sh [--dry-run] [--quick] [--output-dir DIR]
#
# --dry-run  print what would run (and each suite's cells) without training; works without a GPU
# --quick    every suite at its smoke size (a check of the script on a GPU, not figures to publish)
# Without a CUDA GPU the script stops with exit code 2 before it trains anything. Suites resume: run it again
# after an interruption and finished cells are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
quick=()
out=runs/gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --quick) quick=(--quick) ;;
    --output-dir) out="${2:?--output-dir needs a directory}"; shift ;;
    *) echo "benchmarks/gpu.sh: error: unknown argument '$1' (use --dry-run, --quick, --output-dir DIR)" >&2; exit 2 ;;
  esac
  shift
done

suites=(benchmarks/sentiment-core.yaml benchmarks/gpu/scaling.yaml benchmarks/gpu/smollm2-qlora-sft.yaml)

if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  has_gpu=1
else
  has_gpu=0
  if [ "$dry_run" -eq 0 ]; then
    echo "benchmarks/gpu.sh: error: no CUDA GPU here (torch.cuda.is_available() is False); this script records" \
         "GPU rows only. See what it would run with --dry-run." >&2
    exit 2
  fi
fi

peftkit env
dirs=()
for suite in "${suites[@]}"; do
  dir="$out/$(basename "$suite" .yaml)${quick[*]:+-quick}"
  dirs+=("$dir")
  if [ "$dry_run" -eq 1 ]; then
    echo "would run: peftkit bench $suite ${quick[*]} --output-dir $dir"
    python - "$suite" "${quick[*]}" <<'PY'
import sys

from peftkit.bench.suite import expand, load_suite

cells = expand(load_suite(sys.argv[1]), quick=bool(sys.argv[2]))
print(f"  {len(cells)} cells: {', '.join(cell.id for cell in cells)}")
PY
  else
    peftkit bench "$suite" "${quick[@]}" --output-dir "$dir" || echo "suite $suite: some cells failed (see its report)"
  fi
done

command="benchmarks/gpu.sh${quick[*]:+ --quick}"
if [ "$dry_run" -eq 1 ]; then
  echo "would write GPU rows: python tools/gpu_rows.py benchmarks/RESULTS.md ${dirs[*]} --command '$command'"
  [ "$has_gpu" -eq 1 ] || echo "(no CUDA GPU here: a real run would stop before training)"
else
  python tools/gpu_rows.py benchmarks/RESULTS.md "${dirs[@]}" --command "$command"
fi
