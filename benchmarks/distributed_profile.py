"""Where a context-parallel step's time goes: ``torchrun --nproc_per_node 2
benchmarks/distributed_profile.py --out DIR [--cases bigbird,local]``.

Per case, one warmed-up forward+backward of ``sparseflash.distributed.sparse_attention`` under
``torch.profiler`` on every rank; writes each rank's table of CUDA time per op
(``profile_<case>_rank<r>.txt``) and rank 0's Chrome trace of the bigbird case. bf16, d=128,
H=16, block 128, zigzag shards, as in ``distributed_bench.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
import sparseflash.distributed as sfd  # noqa: E402

CASES = {
    "local": (sf.local(3) | sf.global_blocks(1), 1 << 20, True, "zigzag"),
    "bigbird": (sf.bigbird(window=3, globals=2, random=3), 1 << 20, True, "zigzag"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default="local,bigbird")
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    torch.cuda.set_device(dev)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    H, d, bs = 16, 128, 128
    for name in args.cases.split(","):
        pattern, N, causal, sharding = CASES[name]
        g = torch.Generator(device=dev).manual_seed(0)
        full = [torch.randn(1, H, N, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(4)]
        q, k, v, do = (sfd.shard(t, world, rank, sharding) for t in full)
        del full
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
        kw = dict(block_size=bs, causal=causal, sharding=sharding)

        def step():
            o = sfd.sparse_attention(q, k, v, pattern, **kw)
            torch.autograd.grad(o, (q, k, v), do)
        for _ in range(3):
            step()
        walls = []
        for _ in range(3):
            dist.barrier(); torch.cuda.synchronize()
            t0 = time.perf_counter(); step(); torch.cuda.synchronize()
            walls.append((time.perf_counter() - t0) * 1e3)
        dist.barrier(); torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) * 1e3
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=60)
        text = f"case {name} rank {rank}: wall ms {[round(w, 2) for w in walls]}, profiled {wall:.2f}\n{table}\n"
        (out / f"profile_{name}_rank{rank}.txt").write_text(text)
        if rank == 0:
            print(text, flush=True)
            prof.export_chrome_trace(str(out / f"trace_{name}_rank0.json"))
        del q, k, v, do
        torch.cuda.empty_cache()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
