"""tests/test_random_combos.py's draws for many seeds: ``python tests/fuzz/fuzz_combo.py FIRST LAST BACKEND``
(BACKEND torch or triton; triton needs TRITON_INTERPRET=1 on the CPU, set by default). Prints FAIL lines
and "done fails N"."""
import os, sys, traceback, time
os.environ.setdefault("TRITON_INTERPRET", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests")); sys.path.insert(0, ROOT)
import torch
torch.set_num_threads(1)
from test_random_combos import run_case, draw_case
a, b, backend = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
fails = 0
for s in range(a, b):
    try:
        run_case(s, backend)
    except Exception as e:
        fails += 1
        print("FAIL", s, type(e).__name__, str(e)[:600], flush=True)
    if s % 10 == 0:
        print("progress", s, time.strftime("%X"), flush=True)
print("done fails", fails, flush=True)
