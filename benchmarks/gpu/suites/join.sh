# join.sh MODEL PART...: put a catalogue model's weights back together from the pieces in $ROOT/parts, then check
# them against the sha256 pack.sh recorded
set -eu
. ${ROOT:-/tmp}/gbin/env.sh
model=$1; shift
(cd $ROOT/parts && cat "$@") > $ROOT/pkc/models/$model/model.safetensors
(cd $ROOT/pkc && grep "models/$model/" $ROOT/gbin/sums.txt | sha256sum -c -)
