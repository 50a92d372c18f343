#!/usr/bin/env bash
# run41 call 1: compute-sanitizer on the dK/dV kernel's two loops (stop 58: on by default with the
# softcap): memcheck and racecheck with softcap 30, memcheck with the split forced on without options.
#   OUT=DIR bash benchmarks/results/h200-hopper/run41-stop59/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run41-s && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
for spec in "memcheck softcap --softcap 30" "racecheck softcap --softcap 30" "memcheck split --split 1"; do
  set -- $spec; tool=$1; name=$2; shift 2
  timeout ${SLIMIT:-90} compute-sanitizer --tool $tool python3 benchmarks/sanitize.py "$@" > $R/${tool}_$name.txt 2>&1
  echo "rc=$?" >> $R/${tool}_$name.txt
  echo "== $tool $name"; grep -E "max \||ERROR SUMMARY|RACECHECK SUMMARY|rc=" $R/${tool}_$name.txt | cut -c1-200
done
