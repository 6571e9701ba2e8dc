set -eu
. .gpu/bin/env.sh
cp .gpu/c4/m3e.part1 $ROOT/parts/
cat $ROOT/parts/m3e.part0 $ROOT/parts/m3e.part1 > $ROOT/pkc/models/m3e-small/model.safetensors
(cd $ROOT/pkc && grep m3e $ROOT/gbin/sums.txt | sha256sum -c -)
bash .gpu/bin/start-suite.sh zh-news benchmarks/zh-news.yaml $JOBS_ZH
bash $ROOT/gbin/collect.sh ${DEADLINE:-540}
