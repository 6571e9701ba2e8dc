# collect.sh SECONDS JOB...: wait up to SECONDS for the background jobs (gputests, bench-NAME) to end, then put their
# logs and the bench folders (without run weights) in $OUT
. ${ROOT:-/tmp}/gbin/env.sh
OUT=${OUT:-$ROOT/out}; mkdir -p $OUT
deadline=$((SECONDS + $1)); shift
ended() { for job in "$@"; do [ -e $ROOT/$job.done ] || return 1; done; }
while [ $SECONDS -lt $deadline ] && ! ended "$@"; do
  sleep 5
  if [ $((SECONDS % 60)) -lt 5 ]; then
    echo "--- $SECONDS s"; for job in "$@"; do tail -1 $ROOT/$job.log; done
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
  fi
done
for job in "$@"; do
  echo "== $job: $([ -e $ROOT/$job.done ] && echo done || echo running)"
  cp $ROOT/$job.log $OUT/ 2>/dev/null || true
  case $job in bench-*) [ -d $ROOT/$job ] && tar -czf $OUT/$job.tgz -C $ROOT --exclude=runs $job ;; esac
  tail -30 $ROOT/$job.log
done
ls -la $OUT
