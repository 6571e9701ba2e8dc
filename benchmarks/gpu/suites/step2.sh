set -eu
. .gpu/bin/env.sh
cp .gpu/c2/minilm.part1 .gpu/c2/minilm.part2 $ROOT/parts/
bash $ROOT/gbin/join.sh minilm-l6 minilm.part0 minilm.part1 minilm.part2
for name in $NER_SUITES; do bash .gpu/bin/start-suite.sh $name benchmarks/$name.yaml $JOBS_NER; done
