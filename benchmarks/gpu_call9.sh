#!/usr/bin/env bash
# device call: the Gluon top-k row kernel against the tl one (tables equal to the torch
# chain on awkward cases; build time at 8 x 32 x 64K tokens, k = 16, by CUDA-graph replay)
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
timeout 240 python3 benchmarks/rows_probe.py --out $O/rows ${ROWS_ARGS:-} > $O/rows.log 2>&1
echo "rows rc=$?"; grep -v '^{"kind": "time"' $O/rows.log | tail -30; grep '"kind": "time"' $O/rows.log | cut -c1-400
