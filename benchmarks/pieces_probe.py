"""One GPU, one rank's forward of the context-parallel plan (rank 0 of 2, zigzag, 1M tokens,
bf16, d=128, H=16, block 128): the own-shard copy then one attention call, against the
pipelined form (4 pieces of the KV heads, each piece's copy on a side stream beside the
previous piece's attention). No exchange: what the pieces cost or save on the GPU itself.

    PYTHONPATH=. python benchmarks/pieces_probe.py --out DIR
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
import sparseflash.distributed as sfd  # noqa: E402
from sparseflash.attention import _forward_impl  # noqa: E402
from benchmarks.run import environment  # noqa: E402


def timed(fn, reps=10):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def write_probe(name: str, out_dir: str, rows: list, dev: torch.device, dtype: str = "bfloat16") -> None:
    """``out_dir/<name>.json``: the rows with the run's environment and command."""
    meta = environment(argparse.Namespace(argv=sys.argv[1:], dtype=dtype, tiny=False, quick=False,
                                          suites=name, estimate_device=None), dev)
    meta["command"] = f"PYTHONPATH=. python benchmarks/{name}.py " + " ".join(sys.argv[1:])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dev = torch.device("cuda")
    H, d, bs, N, P = 16, 128, 128, 1 << 20, 4
    rows = []
    for name, pattern in (("bigbird(3, 2, 3)", sf.bigbird(window=3, globals=2, random=3)),
                          ("local(3) | global_blocks(1)", sf.local(3) | sf.global_blocks(1))):
        plan = sfd.shard_plan(pattern, N, 2, 0, bs, True, H, None, "zigzag", H)
        n = plan.shard_len
        q = torch.randn(1, H, n, d, device=dev, dtype=torch.bfloat16)
        k, v = (torch.randn(1, H, n, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
        kv = torch.randn(2, 1, H, plan.kv_len, d, device=dev, dtype=torch.bfloat16)
        out = torch.empty_like(q)
        lse = torch.empty(1, H, n, device=dev, dtype=torch.float32)
        own = slice(plan.own_row // bs, (plan.own_row + n) // bs)
        side = torch.cuda.Stream()
        scale = d ** -0.5

        def copy(i, p):
            h = slice(i * H // p, (i + 1) * H // p)
            sfd._blocks(kv[0, :, h], bs)[:, :, own].copy_(sfd._blocks(k[:, h], bs))
            sfd._blocks(kv[1, :, h], bs)[:, :, own].copy_(sfd._blocks(v[:, h], bs))

        def copy_heads(i, p):
            # per head and tensor one contiguous run: same-device cudaMemcpyAsync (copy engine)
            r0 = plan.own_row
            for h in range(i * H // p, (i + 1) * H // p):
                kv[0, 0, h, r0:r0 + n].copy_(k[0, h])
                kv[1, 0, h, r0:r0 + n].copy_(v[0, h])

        def one_call():
            copy(0, 1)
            _forward_impl(q, kv[0], kv[1], plan.layout, scale, "triton", None)

        def attention_only():
            _forward_impl(q, kv[0], kv[1], plan.layout, scale, "triton", None)

        def pieces(copy_piece=copy):
            cur = torch.cuda.current_stream()
            side.wait_stream(cur)
            for i in range(P):
                with torch.cuda.stream(side):
                    copy_piece(i, P)
                cur.wait_stream(side)
                h = slice(i * H // P, (i + 1) * H // P)
                _forward_impl(q[:, h], kv[0][:, h], kv[1][:, h], plan.layout, scale, "triton", None,
                              out=out[:, h], lse=lse[:, h])

        def pieces_memcpy():
            pieces(copy_heads)

        def pieces_no_copy():
            for i in range(P):
                h = slice(i * H // P, (i + 1) * H // P)
                _forward_impl(q[:, h], kv[0][:, h], kv[1][:, h], plan.layout, scale, "triton", None,
                              out=out[:, h], lse=lse[:, h])
        copy(0, 1)
        ref = _forward_impl(q, kv[0], kv[1], plan.layout, scale, "triton", None)[0]
        pieces()
        torch.cuda.synchronize()
        same = bool(torch.equal(out, ref))
        out.zero_()
        pieces_memcpy()
        torch.cuda.synchronize()
        same_memcpy = bool(torch.equal(out, ref))
        row = dict(case=f"{name} causal 1M, rank 0 of 2 (zigzag)", blocks=plan.layout.nnz,
                   copy_ms=round(timed(lambda: copy(0, 1)), 3),
                   attention_one_call_ms=round(timed(attention_only), 3),
                   attention_4_pieces_ms=round(timed(pieces_no_copy), 3),
                   copy_then_one_call_ms=round(timed(one_call), 3),
                   pieces_copies_on_side_stream_ms=round(timed(pieces), 3),
                   memcpy_copy_ms=round(timed(lambda: copy_heads(0, 1)), 3),
                   pieces_memcpy_on_side_stream_ms=round(timed(pieces_memcpy), 3),
                   pieces_equal_one_call=same, pieces_memcpy_equal_one_call=same_memcpy)
        print(json.dumps(row), flush=True)
        rows.append(row)
        del q, k, v, kv, out, lse, ref
        torch.cuda.empty_cache()
    write_probe("pieces_probe", args.out, rows, dev)


if __name__ == "__main__":
    main()
