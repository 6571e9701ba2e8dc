set -eu
. .gpu/bin/env.sh
cp .gpu/c3/m3e.part0 $ROOT/parts/
tail -2 $ROOT/bench-ner.log; tail -2 $ROOT/gputests.log || true
