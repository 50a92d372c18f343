#!/usr/bin/env bash
# device call (one H200): softcap's forward with a share of its exponentials on the FMA units
# (issue 11; launch.SOFTCAP_EXP2). (1) the Hopper softcap/ALiBi oracle tests (the two new
# split cases among them), (2) parity.py --variants for none and the softcap variants in one
# process. Usage: OUT=DIR bash benchmarks/gpu_call14.sh
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O="${OUT:?output folder}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$O/gpu.txt" 2>&1
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' >> "$O/gpu.txt" 2>&1
timeout ${T_TESTS:-150} python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "softcap_and_alibi_match" > "$O/pytest_hopper_mods.txt" 2>&1
echo "pytest rc=$?"; tail -2 "$O/pytest_hopper_mods.txt"; grep -E "^(FAILED|ERROR)" "$O/pytest_hopper_mods.txt" | head
timeout ${T_BENCH:-240} python3 benchmarks/parity.py --variants --only softcap --workers 5 --out "$O/variants" > "$O/variants.log" 2>&1
echo "variants rc=$?"; grep -E '"pass": "(fwd|fwd\+bwd|overhead fwd|overhead fwd\+bwd)"|check' "$O/variants.log" | python3 -c "
import sys, json
for l in sys.stdin:
    try: r = json.loads(l)
    except Exception: continue
    print(r['case'][:28], '|', r['impl'], '|', r['pass'], '|', r['ms'])"
