#!/usr/bin/env bash
# run42 call 1 (stop 61): dropout's dK/dV kernel with HOPPER_DROPOUT_FORM bits 3 (the Philox work
# of words fixed along a step loop done before it) and 4 (dS^T by a select between two forms).
# Bit-identity and oracle tests first (six pytest processes side by side, each compiling its
# own kernels), then parity.py's variants (16K causal, d=128) with forms 3, 11, 19 and 27.
#   OUT=DIR bash benchmarks/results/h200-hopper/run42-stop61/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run42-1 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
T=${TLIMIT:-240}
P="python -m pytest -q -x tests/test_hopper.py -p no:cacheprovider"
timeout $T $P -k "dropout_forms_are_bit_identical and quad-16" > $R/t_forms.txt 2>&1 &
for r in 2 3 7; do timeout $T $P -k "hoisted_philox_is_bit_identical and $r" > $R/t_rounds$r.txt 2>&1 & done
for f in 19 27; do SPARSEFLASH_HOPPER_DROPOUT_FORM=$f timeout $T $P -k "dropout_matches_the_oracle_with_its_mask and quad" \
  > $R/t_oracle$f.txt 2>&1 & done
wait
for f in $R/t_*.txt; do echo "== $f: $(tail -1 $f)"; done
timeout ${VLIMIT:-300} python benchmarks/parity.py --variants --rounds 3 --out $R/variants \
  --only 'dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, Hopper form 11$;dropout 16-bit quad, 7 rounds, Hopper form 19$;dropout 16-bit quad, 7 rounds, Hopper form 27$' \
  > $R/variants.log 2>&1; echo "variants rc=$?"
grep -E '"pass": "overhead' $R/variants.log | cut -c1-220
