# Sourced by every step: where things live on the GPU machine (or, for the CPU rehearsal, under $ROOT).
ROOT=${ROOT:-/tmp}
PY=${PY:-python3}
SITE=${SITE-$ROOT/gsite}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=$ROOT/hf PYTHONUNBUFFERED=1
export PYTHONPATH=${SITE:+$SITE:}$ROOT/repo
# the commit pack.sh packed (bench provenance; the copied .git is stale there)
PEFTKIT_COMMIT=$(cat "$(dirname "${BASH_SOURCE[0]}")/commit" 2>/dev/null || true)
export PEFTKIT_COMMIT
JOBS_NER=${JOBS_NER:-9}
# the suites (benchmarks/NAME.yaml) step 2 starts on MiniLM and step 4 on m3e-small
NER_SUITES=${NER_SUITES-ner}
ZH_SUITES=${ZH_SUITES-zh-news}
JOBS_ZH=${JOBS_ZH:-10}
QUICK=${QUICK:-}
