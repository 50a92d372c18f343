#!/usr/bin/env bash
# run38 call 5 (stop 56): GPU tests on the warm machine: the row tree's tests, then the Hopper
# oracle tests, each under a time limit.
#   OUT=DIR bash benchmarks/results/h200-hopper/run38-stop56/gpu5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/r5 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "by_halves" -x 2>&1 | tail -4 | tee $R/tests_tree.txt
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
  -k "matches_the_oracle and not by_halves and not split_release" 2>&1 | tail -4 | tee $R/tests_oracle.txt
