#!/usr/bin/env bash
# The offline GPU proof: on one CUDA GPU with no network and no package index, train peftkit's GPU cells (QLoRA
# with `auto` settings and with checkpointing, LoRA bf16, LoRA with packing, full FT bf16, fp16 as on an older GPU,
# a deliberate out-of-memory cell, and an A/B of the QLoRA preparation) on random-init fixtures built there, print
# one line per cell and, on a full run, write the GPU rows of benchmarks/RESULTS.md (tools/gpu_proof.py).
#
#   bash benchmarks/gpu.sh --fetch-wheels   # once, on a machine with the package index: the wheels the GPU
#                                           # machine's Python lacks, into benchmarks/gpu-wheels/ (ignored)
#   bash benchmarks/gpu.sh --dry-run        # anywhere: list the cells, check every wheel and fixture
#   bash benchmarks/gpu.sh [--quick]        # on the GPU machine: budgeted for 8 minutes on one H200 (the cells
#                                           # stop after tools/gpu_proof.py's CELLS_BUDGET); not yet run on one
#
# Options: --quick (2 steps a cell, RESULTS.md untouched), --output-dir DIR (default runs/gpu-proof: the wheels
# installed into DIR/site, the fixtures in DIR/fixtures, cell results, logs), --wheels DIR (default
# benchmarks/gpu-wheels). PYTHON names the interpreter (default python3, which holds torch). Without a CUDA GPU a
# run stops with exit code 2 before it installs or builds anything.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
mode=run
quick=()
out=runs/gpu-proof
wheels=benchmarks/gpu-wheels
while [ $# -gt 0 ]; do
  case "$1" in
    --fetch-wheels) mode=fetch ;;
    --dry-run) mode=dry ;;
    --quick) quick=(--quick) ;;
    --output-dir) out="${2:?--output-dir needs a directory}"; shift ;;
    --wheels) wheels="${2:?--wheels needs a directory}"; shift ;;
    *) echo "benchmarks/gpu.sh: error: unknown argument '$1' (use --fetch-wheels, --dry-run, --quick," \
            "--output-dir DIR, --wheels DIR)" >&2; exit 2 ;;
  esac
  shift
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$out/hf"
export PEFTKIT_CACHE="$out/cache" PEFTKIT_GPU_WHEELS="$wheels"

case "$mode" in
  fetch) exec "$python" -m tools.gpu_proof fetch-wheels ;;
  dry) PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m tools.gpu_proof check --output-dir "$out" \
         "${quick[@]}" ;;
esac

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "benchmarks/gpu.sh: error: no CUDA GPU here (torch.cuda.is_available() is False); the proof trains on a" \
       "GPU only. See what it would run with --dry-run." >&2
  exit 2
fi
if ! compgen -G "$wheels/*.whl" >/dev/null; then
  echo "benchmarks/gpu.sh: error: no wheels in $wheels; run 'bash benchmarks/gpu.sh --fetch-wheels' on a machine" \
       "with the package index and bring the folder along" >&2
  exit 2
fi

# The wheels go into a folder of their own, put first on the path: the image's own packages stay as they are.
site="$out/site"
stamp="$site/.peftkit-gpu-wheels"
listed=$(cd "$wheels" && ls ./*.whl)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$listed" ]; then
  if [ -e "$site" ] && [ ! -f "$stamp" ]; then
    echo "benchmarks/gpu.sh: error: $site exists and was not made by this script; use another --output-dir" >&2
    exit 2
  fi
  rm -rf "$site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
  echo "$listed" >"$stamp"
fi
export PYTHONPATH="$site:$PWD"

"$python" -m tools.gpu_proof requirements
"$python" -m tools.gpu_proof check --output-dir "$out" "${quick[@]}"
"$python" -m tools.gpu_fixtures "$out/fixtures"
"$python" -m peftkit env || true
"$python" -m tools.gpu_proof run --output-dir "$out" "${quick[@]}"
echo "benchmarks/gpu.sh: done in ${SECONDS} s"
