"""tests/test_random_combos.py's draws (dropout left out) through ``torch.compile(fullgraph=True)``
against eager, in one process so that dynamo recompiles (automatic dynamic shapes and floats):
``python tests/fuzz/fuzz_compile.py FIRST LAST [--dynamic]``."""
import os, sys, random, time
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests")); sys.path.insert(0, ROOT)
import torch
torch.set_num_threads(1)
torch._dynamo.config.cache_size_limit = 1000
import sparseflash as sf
from test_random_combos import call_inputs, draw_case
a, b = int(sys.argv[1]), int(sys.argv[2])
dynamic = True if "--dynamic" in sys.argv else None
fails = 0
for seed in range(a, b):
    c = dict(draw_case(seed, "torch"), dropout_p=0.0)   # dropout: the graph draws its own seed
    q, k, v, _, kw = call_inputs(c, seed, "cpu")
    pat = c["pattern"]
    def f(q, k, v):
        return sf.sparse_attention(q, k, v, pat, **kw)
    try:
        t = time.time()
        eo = f(q, k, v); eg = torch.autograd.grad(eo.sum(), (q, k, v))
        cf = torch.compile(f, fullgraph=True, dynamic=dynamic)
        co = cf(q, k, v); cg = torch.autograd.grad(co.sum(), (q, k, v))
        e = max((x - y).abs().max().item() for x, y in zip((eo, *eg), (co, *cg)))
        print(seed, f"{time.time()-t:.1f}s diff {e:.2e}", flush=True)
        if e > 1e-5:
            fails += 1; print("FAIL", seed, e, {kk: vv for kk, vv in c.items() if kk not in ("kpm", "alibi")}, flush=True)
    except Exception as ex:
        fails += 1
        print("EXC", seed, type(ex).__name__, str(ex)[:400], {kk: vv for kk, vv in c.items() if kk not in ("kpm", "alibi")}, flush=True)
print("done fails", fails)
