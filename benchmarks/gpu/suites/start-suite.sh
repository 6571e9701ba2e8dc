# start-suite.sh NAME SUITE JOBS: run a suite in the background (its own session: it outlives the call)
set -eu
. .gpu/bin/env.sh
name=$1; suite=$2; jobs=$3
(cd $ROOT/repo && PEFTKIT_CACHE=$ROOT/pkc OMP_NUM_THREADS=1 setsid nohup bash -c "$PY -m peftkit bench $suite $QUICK --jobs $jobs --output-dir $ROOT/bench-$name; echo exit \$?; touch $ROOT/bench-$name.done" > $ROOT/bench-$name.log 2>&1 < /dev/null &)
echo "started $name ($suite, --jobs $jobs)"
