# collect.sh SECONDS: wait up to SECONDS for the GPU tests and both suites, then put what they wrote in $OUT
. ${ROOT:-/tmp}/gbin/env.sh
OUT=${OUT:-$ROOT/out}; mkdir -p $OUT
deadline=$((SECONDS + ${1:-540}))
while [ $SECONDS -lt $deadline ]; do
  [ -e $ROOT/gputests.done ] && [ -e $ROOT/bench-ner.done ] && [ -e $ROOT/bench-zh-news.done ] && break
  sleep 5
  if [ $((SECONDS % 60)) -lt 5 ]; then
    echo "--- $SECONDS s"; tail -1 $ROOT/bench-ner.log; tail -1 $ROOT/bench-zh-news.log
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
  fi
done
for f in gputests bench-ner bench-zh-news; do echo "== $f: $([ -e $ROOT/$f.done ] && echo done || echo running)"; done
cp $ROOT/gputests.log $ROOT/bench-ner.log $ROOT/bench-zh-news.log $OUT/ 2>/dev/null || true
for name in ner zh-news; do
  [ -d $ROOT/bench-$name ] && tar -czf $OUT/bench-$name.tgz -C $ROOT --exclude=runs bench-$name
done
tail -25 $ROOT/gputests.log; tail -30 $ROOT/bench-ner.log; tail -30 $ROOT/bench-zh-news.log
ls -la $OUT
