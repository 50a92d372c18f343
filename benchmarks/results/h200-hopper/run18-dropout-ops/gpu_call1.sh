#!/usr/bin/env bash
# run18 call 1: dropout's draws in fewer instructions (launch.HOPPER_DROPOUT_FORM; the same
# bits in every form). The GPU dropout tests of the Hopper kernels (the oracle with its mask at
# the default form 3, and forms 1-3 bit for bit against form 0), then parity.py --variants:
# dropout 0.1 with forms 0-3 (16-bit) and 0, 3 (8-bit) in one process, and the tree before
# (_old_tree = git archive of 6340596's sparseflash and benchmarks) in another.
cd "$(dirname "$0")/../../../.."
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
PYTHONPATH=. timeout 170 python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k dropout > $OUT/pytest.txt 2>&1; tail -3 $OUT/pytest.txt
grep -E "^FAILED|^E  " $OUT/pytest.txt | head -12
PYTHONPATH=. timeout 220 python benchmarks/parity.py --variants --only "dropout 16-bit mma,dropout 8-bit mma" --out $OUT/new > $OUT/new.log 2>&1
grep -E "overhead|check" $OUT/new.log | cut -c1-260 | head -40; tail -2 $OUT/new.log | cut -c1-300
PYTHONPATH=_old_tree timeout 120 python _old_tree/benchmarks/parity.py --variants --only "dropout 16-bit mma" --out $OUT/old > $OUT/old.log 2>&1
grep -E "overhead" $OUT/old.log | cut -c1-260 | head -10; tail -2 $OUT/old.log | cut -c1-300
rm -f $OUT/*/*.png
