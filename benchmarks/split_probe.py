"""One GPU, one rank's backward of the context-parallel plan (rank 0 of 2, zigzag, 1M tokens,
bf16, d=128, H=16, block 128): the dK/dV launch whole against cut in two (the received
blocks' columns first, as the split backward runs it). No exchange: what the cut costs on the
GPU itself, and that it gives the same gradients.

    PYTHONPATH=. python benchmarks/split_probe.py --out DIR
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
import sparseflash.distributed as sfd  # noqa: E402
from sparseflash.attention import _backward_impl, _forward_impl  # noqa: E402
from benchmarks.pieces_probe import timed, write_probe  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--bigbird-only", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    H, d, bs, N = 16, 128, 128, 1 << 20
    rows = []
    cases = [("bigbird(3, 2, 3) causal 1M", sf.bigbird(window=3, globals=2, random=3), N),
             ("dense causal 256K", sf.dense(), 1 << 18)]
    for name, pattern, n_tokens in cases[:1 if "--bigbird-only" in sys.argv else 2]:
        plan = sfd.shard_plan(pattern, n_tokens, 2, 0, bs, True, H, None, "zigzag", H)
        lay = plan.layout
        q, do = (torch.randn(1, H, lay.seq_len, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
        k, v = (torch.randn(1, H, lay.kv_len, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
        scale = d ** -0.5
        out, lse = _forward_impl(q, k, v, lay, scale, "triton", None)
        first = plan.indices(dev).received_columns

        def whole():
            return _backward_impl(do, q, k, v, out, lse, None, lay, scale, "triton", None)

        def cut():
            return _backward_impl(do, q, k, v, out, lse, None, lay, scale, "triton", None, dkdv_first=first,
                                  between=lambda *g: None)
        # the same cut with the heaviest columns (the global ones: most rows read them) in
        # the first part too, so they start at once as in the whole launch's heavy-first order
        counts = torch.as_tensor(lay.bwd_ptr[1:] - lay.bwd_ptr[:-1]).reshape(-1, lay.kv_len // bs).sum(0)
        heavy = (counts > 2 * counts.float().mean()).numpy()
        first_heavy = first | heavy

        def cut_heavy_first():
            return _backward_impl(do, q, k, v, out, lse, None, lay, scale, "triton", None,
                                  dkdv_first=first_heavy, between=lambda *g: None)
        same = all(torch.equal(a, b) for a, b in zip(whole(), cut()))
        row = dict(case=f"{name}, rank 0 of 2 (zigzag)", blocks=lay.nnz, received_columns=int(first.sum()),
                   heavy_columns=int(heavy.sum()),
                   backward_whole_ms=round(timed(whole), 3), backward_cut_ms=round(timed(cut), 3),
                   backward_cut_heavy_first_ms=round(timed(cut_heavy_first), 3),
                   cut_equals_whole=same)
        print(json.dumps(row), flush=True)
        rows.append(row)
        del q, do, k, v, out, lse
        torch.cuda.empty_cache()
    write_probe("split_probe", args.out, rows, dev)


if __name__ == "__main__":
    main()
