set -eu
. .gpu/bin/env.sh
rm -rf $ROOT/repo && mkdir -p $ROOT/repo $ROOT/pkc $ROOT/parts
tar -cf - --exclude=./.gpu --exclude=./.venv --exclude=./runs --exclude=./.scratch --exclude=./benchmarks/gpu-wheels . | tar -xf - -C $ROOT/repo
rm -rf $ROOT/gbin && cp -r .gpu/bin $ROOT/gbin
[ -z "$SITE" ] || tar -xJf .gpu/c1/site.tar.xz -C $ROOT
tar -xJf .gpu/c1/small.tar.xz -C $ROOT/pkc
cp .gpu/c1/minilm.part0 $ROOT/parts/
$PY -c "import torch, transformers, peft, bitsandbytes, pydantic, seqeval; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__)"
if [ -z "${NO_TESTS:-}" ]; then
  (cd $ROOT/repo && PEFTKIT_CACHE=$ROOT/pkc-tests setsid nohup bash -c "$PY -m pytest -p no:cacheprovider -q -rf tests/training/test_gpu.py tests/methods/test_methods.py; echo exit \$? ; touch $ROOT/gputests.done" > $ROOT/gputests.log 2>&1 < /dev/null &)
else
  touch $ROOT/gputests.done
fi
echo "step 1 done: $(du -sh $ROOT/repo $ROOT/pkc | tr '\n' ' ')"
