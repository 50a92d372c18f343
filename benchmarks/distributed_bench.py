"""Context parallelism on one host: ``torchrun --nproc_per_node 2 benchmarks/distributed_bench.py --out DIR``.

Per case: forward+backward time of ``sparseflash.distributed.sparse_attention`` on all ranks
(contiguous shards, NCCL point-to-point exchange of the blocks each rank reads) against
``sparseflash.sparse_attention`` on rank 0 alone over the whole sequence, in the same run;
the shards' outputs are gathered on rank 0 and checked against the one-GPU output. bf16,
d=128, H=16, block 128. Writes ``distributed.json`` (rank 0).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import sparseflash as sf
from sparseflash.distributed import shard_plan, sparse_attention as cp_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.run import environment  # noqa: E402

CASES = [
    # name, pattern, N, causal, one-GPU baseline
    # causal (a language model's case): a global row then reads only its own block, so a
    # rank receives the global column and its neighbours' edge blocks, not a whole shard
    ("local(3) | global_blocks(1) causal, 1M", sf.local(3) | sf.global_blocks(1), 1 << 20, True, True),
    ("bigbird(3, 2, 3) causal, 1M", sf.bigbird(window=3, globals=2, random=3), 1 << 20, True, True),
    ("local(3) | global_blocks(1) non-causal, 1M", sf.local(3) | sf.global_blocks(1), 1 << 20, False, True),
    ("dense causal, 256K", sf.dense(), 1 << 18, True, True),
    ("local(3) | global_blocks(1) causal, 2M", sf.local(3) | sf.global_blocks(1), 1 << 21, True, False),
]


def timed(fn, reps=5, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        dist.barrier()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        dist.barrier()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _patch_cpu():
    """--cpu-smoke: CUDA calls become no-ops."""
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.reset_peak_memory_stats = lambda *a, **k: None
    torch.cuda.max_memory_allocated = lambda *a, **k: 0
    torch.cuda.empty_cache = lambda *a, **k: None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-smoke", action="store_true", help="gloo on CPU at 4K tokens (checks the script)")
    args = ap.parse_args()
    smoke = args.cpu_smoke
    dist.init_process_group("gloo" if smoke else "nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    if smoke:
        dev, dtype = torch.device("cpu"), torch.float32
        _patch_cpu()
    else:
        dev, dtype = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank))), torch.bfloat16
        torch.cuda.set_device(dev)
    H, d, bs = (2, 32, 128) if smoke else (16, 128, 128)
    rows = []
    for name, pattern, N, causal, baseline in CASES:
        if smoke:
            N = 4096
        n = N // world
        sl = slice(rank * n, (rank + 1) * n)
        g = torch.Generator(device=dev).manual_seed(0)
        n = N // world
        sl = slice(rank * n, (rank + 1) * n)
        full = [torch.randn(1, H, N, d, device=dev, dtype=dtype, generator=g) for _ in range(4)]
        q, k, v, do = (t[:, :, sl].clone() for t in full)
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
        plan = shard_plan(pattern, N, world, rank, bs, causal, H)

        def cp_step():
            out = cp_attention(q, k, v, pattern, block_size=bs, causal=causal)
            torch.autograd.grad(out, (q, k, v), do)
        torch.cuda.reset_peak_memory_stats(dev)
        cp_ms = timed(cp_step)
        cp_peak = torch.cuda.max_memory_allocated(dev) / 2**30
        with torch.no_grad():
            cp_fwd_ms = timed(lambda: cp_attention(q, k, v, pattern, block_size=bs, causal=causal))
            out = cp_attention(q, k, v, pattern, block_size=bs, causal=causal)
        gathered = [torch.empty_like(out) for _ in range(world)] if rank == 0 else None
        dist.gather(out.contiguous(), gathered, dst=0)
        one_ms = one_fwd_ms = err = None
        if baseline:
            if rank == 0:
                fq, fk, fv = (t.detach().clone().requires_grad_(True) for t in full[:3])

                def one_step():
                    o = sf.sparse_attention(fq, fk, fv, pattern, block_size=bs, causal=causal)
                    torch.autograd.grad(o, (fq, fk, fv), full[3])
                for _ in range(2):
                    one_step()
                ts = []
                for _ in range(5):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    one_step()
                    torch.cuda.synchronize()
                    ts.append((time.perf_counter() - t0) * 1e3)
                one_ms = statistics.median(ts)
                with torch.no_grad():
                    ref = sf.sparse_attention(fq, fk, fv, pattern, block_size=bs, causal=causal)
                    ts = []
                    for _ in range(5):
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        sf.sparse_attention(fq, fk, fv, pattern, block_size=bs, causal=causal)
                        torch.cuda.synchronize()
                        ts.append((time.perf_counter() - t0) * 1e3)
                    one_fwd_ms = statistics.median(ts)
                got = torch.cat(gathered, dim=2)
                err = ((got.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                del fq, fk, fv, ref, got
            dist.barrier()
        row = dict(case=name, N=N, world=world, causal=causal, cp_fwd_bwd_ms=round(cp_ms, 2),
                   cp_fwd_ms=round(cp_fwd_ms, 2), one_gpu_fwd_bwd_ms=one_ms and round(one_ms, 2),
                   one_gpu_fwd_ms=one_fwd_ms and round(one_fwd_ms, 2),
                   speedup_fwd_bwd=one_ms and round(one_ms / cp_ms, 3),
                   speedup_fwd=one_fwd_ms and round(one_fwd_ms / cp_fwd_ms, 3),
                   max_rel_err_vs_one_gpu=err, rank0_peak_gib=round(cp_peak, 2),
                   blocks_received_rank0=plan.blocks_received if rank == 0 else None)
        if rank == 0:
            print(json.dumps(row), flush=True)
            rows.append(row)
        del q, k, v, do, full, out
        torch.cuda.empty_cache()
    if rank == 0:
        a = argparse.Namespace(argv=sys.argv[1:], dtype="bfloat16", tiny=False, quick=False, suites="distributed",
                               estimate_device=None)
        meta = environment(a, dev)
        meta["command"] = "torchrun --nproc_per_node 2 benchmarks/distributed_bench.py " + " ".join(sys.argv[1:])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "distributed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
