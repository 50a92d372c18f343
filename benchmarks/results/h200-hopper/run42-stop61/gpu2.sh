#!/usr/bin/env bash
# run42 call 2 (stop 61): HOPPER_DROPOUT_FORM 19 (bit 4, dS^T by a select) as the default. The
# forms' bit-identity test (16-bit quad and mma draws) and the non-quad dropout oracle cases
# under the new default, side by side; then parity.py's variants, the default against form 3,
# at d=128 and d=64 (16K causal).
#   OUT=DIR bash benchmarks/results/h200-hopper/run42-stop61/gpu2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run42-2 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
T=${TLIMIT:-200}
P="python -m pytest -q -x tests/test_hopper.py -p no:cacheprovider"
timeout $T $P -k "dropout_forms_are_bit_identical and quad-16" > $R/t_forms_quad16.txt 2>&1 &
timeout $T $P -k "dropout_forms_are_bit_identical and mma-16" > $R/t_forms_mma16.txt 2>&1 &
timeout $T $P -k "dropout_matches_the_oracle_with_its_mask and not quad" > $R/t_oracle_other.txt 2>&1 &
wait
for f in $R/t_*.txt; do echo "== $f: $(tail -1 $f)"; done
for d in 128 64; do
  timeout ${VLIMIT:-150} python benchmarks/parity.py --variants --rounds 3 --head-dim $d --out $R/variants$d \
    --only 'dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, Hopper form 3$' \
    > $R/variants$d.log 2>&1; echo "variants d=$d rc=$?"
  grep -E '"pass": "overhead' $R/variants$d.log | cut -c60-200
done
