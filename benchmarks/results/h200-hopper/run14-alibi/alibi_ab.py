"""run14: ALiBi's cost, with and without ``alibi_slopes`` in one process, for the tree on
PYTHONPATH (run it once per tree, alternating, on one machine): parity.py's shapes (16K
tokens, d=128, H=16, B=1, bf16; dense causal and ``local(8) | global_blocks(1)`` causal;
flash-attn's geometric slopes, shape (H,)), forward and forward+backward, plus the check of
the ALiBi output against an fp32 SDPA with the bias on 2K tokens. Usage:
``PYTHONPATH=TREE:. python alibi_ab.py --out DIR --tag NAME``."""
import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import sparseflash as sf                                     # from TREE (first on PYTHONPATH)
from sparseflash.attention import sparse_attention

root = Path(__file__).resolve().parents[4]
sys.path.insert(1, str(root))
from benchmarks import parity, real_batches as rb           # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--tag", required=True)
args = ap.parse_args()
args.suites = "alibi"
dev, out, meta, timer = rb.start_run(args, sys.argv[1:], "alibi_ab.py")
meta["sparseflash_from"] = os.path.dirname(sf.__file__)
meta["tag"] = args.tag
N, H, d = 16384, 16, 128
q, k, v, do = parity.make_inputs(dev, torch.bfloat16, N, H, d)
slopes = parity.alibi_slopes(H).to(dev)
for pname, pattern in parity.patterns(False):
    layout = sf.compile(pattern, N, block_size=128, causal=True, num_heads=H)
    ff, fb = rb.block_flops(layout, d), rb.block_flops(layout, d, backward=True)
    case = f"{pname} causal, N=16K, H={H}, d={d}"

    def ours(**opt):
        return lambda q, k, v: sparse_attention(q, k, v, pattern, causal=True, block_size=128, **opt)
    n = 2048
    q2, k2, v2 = (t[:, :, :n] for t in (q, k, v))
    pos = torch.arange(n, device=dev)
    bias = -slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs().float()
    blocks = torch.from_numpy(sf.compile(pattern, n, block_size=128, causal=True, num_heads=H)
                              .to_dense()).to(dev)                    # [heads or 1, nq, nk]
    mask = blocks.repeat_interleave(128, 1).repeat_interleave(128, 2)[:, :n, :n] \
        & torch.ones(n, n, dtype=torch.bool, device=dev).tril()
    ref = F.scaled_dot_product_attention(q2.float(), k2.float(), v2.float(),
                                         attn_mask=bias.masked_fill(~mask, -math.inf))
    got = sparse_attention(q2, k2, v2, pattern, causal=True, block_size=128, alibi_slopes=slopes)
    rb.add("alibi", case, "check: alibi vs fp32 SDPA with the bias (2K tokens)", "max|diff|/max|ref|",
           rb.rel_err(got, ref), None, None)
    for rep in range(2):
        base = parity.time_case(timer, dev, case, f"none#{rep}", ours(), q, k, v, do, ff, fb, suite="alibi")
        with_opt = parity.time_case(timer, dev, case, f"alibi#{rep}", ours(alibi_slopes=slopes), q, k, v,
                                    do, ff, fb, suite="alibi")
        parity.overhead(case, f"alibi#{rep}", base, with_opt, 1.10, suite="alibi")
rb.write_rows(out, "alibi", meta)
