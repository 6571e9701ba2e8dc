set -eu
. .gpu/bin/env.sh
cp .gpu/c4/m3e.part1 $ROOT/parts/
bash $ROOT/gbin/join.sh m3e-small m3e.part0 m3e.part1
bash .gpu/bin/start-suite.sh zh-news benchmarks/zh-news.yaml $JOBS_ZH
bash $ROOT/gbin/collect.sh ${DEADLINE:-540} gputests bench-ner bench-zh-news
