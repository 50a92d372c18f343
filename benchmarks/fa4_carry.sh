#!/usr/bin/env bash
# FlashAttention-4's wheels for the device tool in folders it can carry beside the working tree
# (a call carries at most 64 MiB in all, tree included; this tree is about 28 MB), and the
# commands that join them on the device, each call within 30 s of the last on one warm machine.
# Run in the repository root after `bash ../shared/fa4/fetch.sh` (which leaves .fa4a/ and
# .fa4b/: 48 + 50 MB, too much for one call beside the tree):
#   bash benchmarks/fa4_carry.sh
# It moves them into .fa4c/ (the small wheels) and .fa4d/ to .fa4g/ (the large wheel in four
# parts of at most 25 MB), all git-ignored, and prints the four calls' commands and carries.
set -euo pipefail
# the pieces' size (FA4_SPLIT_BYTES: for tests/test_fa4_carry.py's small files)
cut=${FA4_SPLIT_BYTES:-25000000}
[ -d .git ] || { echo "fa4_carry.sh: run it in the repository root" >&2; exit 2; }
if [ ! -f .fa4a/part.aa ] || [ ! -f .fa4b/BIGNAME ]; then
  if [ -f .fa4g/BIGNAME ]; then
    echo "fa4_carry.sh: already split (.fa4c to .fa4g); the commands:"
  else
    echo "fa4_carry.sh: run 'bash ../shared/fa4/fetch.sh' first (no .fa4a/part.aa or .fa4b/BIGNAME)" >&2
    exit 2
  fi
else
  rm -rf .fa4c .fa4d .fa4e .fa4f .fa4g
  mkdir .fa4c .fa4d .fa4e .fa4f .fa4g
  mv .fa4b/*.whl .fa4c/
  cp .fa4b/BIGNAME .fa4g/
  # the large wheel is .fa4a/part.aa then .fa4b/part.a[b-z]: halve each part
  # (a part of at most $cut bytes splits into one piece: its second piece is then empty, so the
  # device's joins are the same commands)
  split -b $cut .fa4a/part.aa .fa4d/x
  if [ -e .fa4d/xab ]; then mv .fa4d/xab .fa4e/xab; else : > .fa4e/xab; fi
  [ ! -e .fa4d/xac ] || { echo "fa4_carry.sh: .fa4a/part.aa is over $((2 * cut)) bytes; widen the split" >&2; exit 3; }
  cat .fa4b/part.a[b-z] > .fa4f/rest 2>/dev/null || : > .fa4f/rest
  split -b $cut .fa4f/rest .fa4f/y && rm .fa4f/rest
  [ -e .fa4f/yaa ] || : > .fa4f/yaa
  if [ -e .fa4f/yab ]; then mv .fa4f/yab .fa4g/yab; else : > .fa4g/yab; fi
  [ ! -e .fa4f/yac ] || { echo "fa4_carry.sh: the wheel's second part is over $((2 * cut)) bytes; widen the split" >&2; exit 3; }
  rm -rf .fa4a .fa4b
  for d in .fa4c .fa4d .fa4e .fa4f .fa4g; do
    grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
  done
fi
du -sh .fa4c .fa4d .fa4e .fa4f .fa4g
cat <<'MSG'
On one warm device machine, each call within 30 s of the one before (run's carry in brackets):
 1 [".fa4d"]          mkdir -p /root/fa4-stash /root/fa4-whl && cp .fa4d/xaa /root/fa4-stash/xaa
 2 [".fa4c", ".fa4e"] cp .fa4c/*.whl /root/fa4-whl/ && cat /root/fa4-stash/xaa .fa4e/xab > /root/fa4-stash/part.aa && rm /root/fa4-stash/xaa
 3 [".fa4f"]          cp .fa4f/yaa /root/fa4-stash/yaa
 4 [".fa4g"]          begin the command with
   { [ -d /tmp/fa4-site/flash_attn ] || { cat /root/fa4-stash/part.aa /root/fa4-stash/yaa .fa4g/yab > /tmp/$(cat .fa4g/BIGNAME) && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fa4-site /tmp/$(cat .fa4g/BIGNAME) /root/fa4-whl/*.whl; }; } && export PYTHONPATH=/tmp/fa4-site:/tmp/fa4-site/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH &&
   e.g. then: OUT=$OUT/p PART=peers bash benchmarks/results/h200-hopper/run51-stop70/gpu.sh
Later calls on the same warm machine begin with the export alone.
MSG
