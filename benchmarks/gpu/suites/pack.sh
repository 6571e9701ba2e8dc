# pack.sh: build .gpu/ (ignored) from this machine's peftkit cache and benchmarks/gpu-wheels, in pieces that fit
# the device tool's 64 MiB per call: c1 = the wheels unpacked (bitsandbytes' CUDA 13 libraries only, xz) + the
# cache's small files + MiniLM part 0, c2 = MiniLM parts 1-2, c3 / c4 = m3e-small's two halves. bin/ holds these
# scripts and the two weight files' sha256. Needs `peftkit models fetch minilm-l6 m3e-small` and
# `peftkit data fetch conll2003 thucnews` first. Run from the repository root.
set -euo pipefail
cache=${PEFTKIT_CACHE:-$HOME/.cache/peftkit}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
if [ -e .gpu ] && [ ! -f .gpu/bin/sums.txt ]; then
  echo "pack.sh: .gpu exists and is not one pack.sh made (no .gpu/bin/sums.txt); move it away first" >&2; exit 2
fi
rm -rf .gpu && mkdir -p .gpu/bin .gpu/c1 .gpu/c2 .gpu/c3 .gpu/c4 "$work/gsite" "$work/pkc/models" "$work/pkc/data"
cp benchmarks/gpu/suites/*.sh .gpu/bin/
(cd "$work/gsite" && for w in "$OLDPWD"/benchmarks/gpu-wheels/*.whl; do unzip -q -o "$w"; done
 rm -f bitsandbytes/libbitsandbytes_cuda1[12]*.so bitsandbytes/libbitsandbytes_rocm*.so bitsandbytes/libbitsandbytes_xpu*.so)
tar -cJf .gpu/c1/site.tar.xz -C "$work" gsite
cp -a "$cache/models/minilm-l6" "$cache/models/m3e-small" "$work/pkc/models/"
cp -a "$cache/data/conll2003" "$cache/data/thucnews" "$work/pkc/data/"
tar -cJf .gpu/c1/small.tar.xz -C "$work/pkc" --exclude=model.safetensors .
split -b 42000000 -d -a 1 "$cache/models/minilm-l6/model.safetensors" "$work/minilm.part"
mv "$work/minilm.part0" .gpu/c1/ && mv "$work/minilm.part1" "$work/minilm.part2" .gpu/c2/
split -b 50000000 -d -a 1 "$cache/models/m3e-small/model.safetensors" "$work/m3e.part"
mv "$work/m3e.part0" .gpu/c3/ && mv "$work/m3e.part1" .gpu/c4/
# the device's copy of the tree carries a stale .git: provenance takes the commit from here (env.sh exports it)
echo "$(git rev-parse HEAD)$(git status --porcelain --untracked-files=no | grep -q . && echo -dirty)" > .gpu/bin/commit
sha256sum "$cache/models/minilm-l6/model.safetensors" "$cache/models/m3e-small/model.safetensors" \
  | sed "s#$cache/##" > .gpu/bin/sums.txt
du -sh .gpu/c*
