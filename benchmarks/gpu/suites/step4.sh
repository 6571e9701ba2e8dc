set -eu
. .gpu/bin/env.sh
cp .gpu/c4/m3e.part1 $ROOT/parts/
bash $ROOT/gbin/join.sh m3e-small m3e.part0 m3e.part1
for name in $ZH_SUITES; do bash .gpu/bin/start-suite.sh $name benchmarks/$name.yaml $JOBS_ZH; done
bash $ROOT/gbin/collect.sh ${DEADLINE:-540} gputests $(for name in $NER_SUITES $ZH_SUITES; do echo bench-$name; done)
