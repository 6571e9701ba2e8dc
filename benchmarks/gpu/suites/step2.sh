set -eu
. .gpu/bin/env.sh
cp .gpu/c2/minilm.part1 .gpu/c2/minilm.part2 $ROOT/parts/
cat $ROOT/parts/minilm.part0 $ROOT/parts/minilm.part1 $ROOT/parts/minilm.part2 > $ROOT/pkc/models/minilm-l6/model.safetensors
(cd $ROOT/pkc && grep minilm $ROOT/gbin/sums.txt | sha256sum -c -)
bash .gpu/bin/start-suite.sh ner benchmarks/ner.yaml $JOBS_NER
