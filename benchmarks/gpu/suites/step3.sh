set -eu
. .gpu/bin/env.sh
cp .gpu/c3/m3e.part0 $ROOT/parts/
for name in $NER_SUITES; do tail -2 $ROOT/bench-$name.log; done
tail -2 $ROOT/gputests.log || true
