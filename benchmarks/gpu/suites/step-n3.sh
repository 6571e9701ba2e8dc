set -eu
. .gpu/bin/env.sh
cp .gpu/c2/minilm.part1 .gpu/c2/minilm.part2 $ROOT/parts/
cat $ROOT/parts/minilm.part0 $ROOT/parts/minilm.part1 $ROOT/parts/minilm.part2 > $ROOT/pkc/models/minilm-l6/model.safetensors
(cd $ROOT/pkc && grep minilm $ROOT/gbin/sums.txt | sha256sum -c -)
bash .gpu/bin/start-suite.sh ner-3-epochs benchmarks/ner-3-epochs.yaml 6
OUT=${OUT:-$ROOT/out}; mkdir -p $OUT
deadline=$((SECONDS + ${DEADLINE:-300}))
while [ $SECONDS -lt $deadline ] && [ ! -e $ROOT/bench-ner-3-epochs.done ]; do
  sleep 5
  [ $((SECONDS % 60)) -lt 5 ] && { echo "--- $SECONDS s"; tail -1 $ROOT/bench-ner-3-epochs.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true; }
done
cp $ROOT/bench-ner-3-epochs.log $OUT/
tar -czf $OUT/bench-ner-3-epochs.tgz -C $ROOT --exclude=runs bench-ner-3-epochs
cat $ROOT/bench-ner-3-epochs.log
