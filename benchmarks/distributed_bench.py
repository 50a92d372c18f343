"""Context parallelism on one host: ``torchrun --nproc_per_node 2 benchmarks/distributed_bench.py --out DIR``.

One run measures, per case, forward+backward (and forward) of
``sparseflash.distributed.sparse_attention`` on all ranks against ``sparseflash.sparse_attention``
on rank 0 alone over the whole sequence, and checks the gathered shards against the one-GPU
output. Beside each time it records what explains it: the slowest and fastest rank's kernel
time alone on its plan's buffers (so ``cp - kernel`` is the exchange and copies), the blocks
and guests each rank moves, and the link measured in the same run (P2P exchange and
all-gather, GB/s per rank). bf16, d=128, H=16, block 128; causal cases on zigzag shards.
Writes ``distributed.json`` and ``distributed.csv`` into ``--out`` (rank 0, after every case).

``--cpu-smoke``: gloo on CPU at 4K tokens, float32, the torch backend: checks the script end
to end (``torchrun --nproc_per_node 2 benchmarks/distributed_bench.py --cpu-smoke --out DIR``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

# the checkout this script lives in, not whichever sparseflash is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
import sparseflash.distributed as sfd  # noqa: E402
from sparseflash.attention import _backward_impl, _forward_impl  # noqa: E402
from benchmarks.run import environment  # noqa: E402

CASES = [
    # name, pattern, N, causal, sharding, one-GPU baseline, packed documents (None: one sequence)
    ("local(3) | global_blocks(1) causal, 1M", sf.local(3) | sf.global_blocks(1), 1 << 20, True, "zigzag", True, None),
    ("local(3) | global_blocks(1) non-causal, 1M", sf.local(3) | sf.global_blocks(1), 1 << 20, False, "contiguous", True,
     None),
    ("bigbird(3, 2, 3) causal, 1M", sf.bigbird(window=3, globals=2, random=3), 1 << 20, True, "zigzag", True, None),
    ("dense causal, 256K", sf.dense(), 1 << 18, True, "zigzag", True, None),
    ("local(3) | global_blocks(1) causal, 2M", sf.local(3) | sf.global_blocks(1), 1 << 21, True, "zigzag", False, None),
    ("dense causal, 1M, 64 documents", sf.dense(), 1 << 20, True, "zigzag", True, 64),
    ("bigbird(3, 2, 3) causal, 1M, 256 documents", sf.bigbird(window=3, globals=2, random=3), 1 << 20, True, "zigzag",
     True, 256),
]


def documents(N: int, bs: int, count: int, dev) -> torch.Tensor:
    """``cu_seqlens`` of ``count`` documents of random lengths on block boundaries (seeded:
    the same on every rank)."""
    g = torch.Generator().manual_seed(count)
    count = min(count, N // bs)
    cuts = torch.randperm(N // bs - 1, generator=g)[:count - 1].add(1).sort().values * bs
    return torch.cat([torch.tensor([0]), cuts, torch.tensor([N])]).to(dev, torch.int32)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps=5, warmup=2, barrier=True):
    """Median wall time (ms) of ``fn``; with ``barrier`` every rank starts together."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if barrier:
            dist.barrier()
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        if barrier:
            dist.barrier()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _reduce(value: float, op) -> float:
    t = torch.tensor([value], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=op)
    return t.item()


def link(dev, mib: int) -> dict:
    """The link in this run: every rank sends ``mib`` MiB to its right neighbour and receives
    as much from its left at once (the exchange's pattern), and an all-gather of ``mib`` MiB
    per rank; GB/s received per rank."""
    rank, world = dist.get_rank(), dist.get_world_size()
    n = mib * 2**20
    out, into = torch.ones(n, dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)

    def p2p():
        ops = [dist.P2POp(dist.isend, out, (rank + 1) % world), dist.P2POp(dist.irecv, into, (rank - 1) % world)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
    gathered = torch.empty(n * world, dtype=torch.uint8, device=dev)
    p2p_ms = timed(p2p)
    ag_ms = timed(lambda: dist.all_gather_into_tensor(gathered, out))
    return dict(link_mib=mib, p2p_gbps=round(n / p2p_ms / 1e6, 1),
                allgather_gbps_per_rank=round(n * (world - 1) / ag_ms / 1e6, 1))


def torch_context_parallel(N, H, d, dev, dtype, world):
    """Forward+backward (ms) of torch's ``context_parallel`` (ring attention over SDPA, its
    default load balancing) on dense causal attention over N tokens, or a one-line note why
    it did not run."""
    try:
        import torch.nn.functional as F
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.experimental import context_parallel
    except Exception as exc:  # an older or trimmed torch
        return None, f"torch context_parallel does not import: {type(exc).__name__}: {exc}"
    try:
        mesh = init_device_mesh(dev.type, (world,))
        g = torch.Generator(device=dev).manual_seed(1)
        q, k, v = (torch.randn(1, H, N, d, device=dev, dtype=dtype, generator=g).requires_grad_(True)
                   for _ in range(3))
        do = torch.randn(1, H, N, d, device=dev, dtype=dtype, generator=g)
        with context_parallel(mesh, buffers=[q, k, v, do], buffer_seq_dims=[2, 2, 2, 2],
                              no_restore_buffers={q, k, v, do}):
            def step():
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                torch.autograd.grad(out, (q, k, v), do)
            ms = timed(step)
        return ms, None
    except Exception as exc:  # e.g. no ring-attention SDPA on this device
        return None, f"torch context_parallel did not run: {type(exc).__name__}: {str(exc)[:200]}"


def kernel_only(plan, B, H, Hkv, d, dev, dtype, backend, scale):
    """Forward+backward (ms) of this rank's one call on random buffers of its plan's shapes:
    the compute without the exchange, the copies and the merges."""
    layout = plan.layout
    q = torch.randn(B, H, layout.seq_len, d, device=dev, dtype=dtype)
    k, v = (torch.randn(B, Hkv, layout.kv_len, d, device=dev, dtype=dtype) for _ in range(2))
    do = torch.randn_like(q)

    def step():
        out, lse = _forward_impl(q, k, v, layout, scale, backend, None)
        _backward_impl(do, q, k, v, out, lse, None, layout, scale, backend, None)
    return timed(step, barrier=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-smoke", action="store_true", help="gloo on CPU at 4K tokens (checks the script)")
    ap.add_argument("--no-torch-cp", action="store_true",
                    help="skip the comparison with torch's context_parallel (dense causal, SDPA)")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names (default: all)")
    args = ap.parse_args()
    smoke = args.cpu_smoke
    dist.init_process_group("gloo" if smoke else "nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    if smoke:
        dev, dtype, backend = torch.device("cpu"), torch.float32, "torch"
    else:
        dev, dtype, backend = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank))), torch.bfloat16, "triton"
        torch.cuda.set_device(dev)
    H, d, bs = (2, 32, 128) if smoke else (16, 128, 128)
    out_dir = Path(args.out)
    rows = []
    meta = None
    if rank == 0:
        a = argparse.Namespace(argv=sys.argv[1:], dtype=str(dtype).replace("torch.", ""), tiny=False,
                               quick=False, suites="distributed", estimate_device=None)
        meta = environment(a, dev)
        meta["command"] = (f"torchrun --nproc_per_node {world} benchmarks/distributed_bench.py "
                           + " ".join(sys.argv[1:]))
        meta["world"] = world
    net = link(dev, 1 if smoke else 1024)
    if rank == 0:
        meta.update(net)
        print(json.dumps(net), flush=True)
    wanted = [c for c in args.cases.split(",") if c]
    for name, pattern, N, causal, sharding, baseline, ndocs in CASES:
        if wanted and not any(w in name for w in wanted):
            continue
        if smoke:
            N = 4096
        scale = 1.0 / d ** 0.5
        g = torch.Generator(device=dev).manual_seed(0)
        full = [torch.randn(1, H, N, d, device=dev, dtype=dtype, generator=g) for _ in range(4)]
        q, k, v, do = (sfd.shard(t, world, rank, sharding) for t in full)
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
        cu = documents(N, bs, ndocs, dev) if ndocs else None
        docs = tuple(cu.tolist()) if cu is not None else None
        t0 = time.perf_counter()
        plan = sfd.shard_plan(pattern, N, world, rank, bs, causal, H, None, sharding, docs=docs)
        plan_s = time.perf_counter() - t0
        kw = dict(block_size=bs, causal=causal, sharding=sharding, backend=backend, cu_seqlens=cu)

        def cp_step():
            out = sfd.sparse_attention(q, k, v, pattern, **kw)
            torch.autograd.grad(out, (q, k, v), do)
        if not smoke:
            torch.cuda.reset_peak_memory_stats(dev)
        cp_ms = timed(cp_step)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if not smoke else 0.0
        # where the overlap applies, the same step without it (the backward's dK/dV launch in
        # one piece and the forward's exchange whole), and with the forward's exchange whole
        split = plan.blocks_received >= sfd.OVERLAP_MIN_FRACTION * len(plan.own_blocks)
        split = _reduce(float(split), dist.ReduceOp.MAX) > 0
        no_split_ms = whole_fwd_ms = None
        if split:
            saved, sfd.OVERLAP_MIN_FRACTION = sfd.OVERLAP_MIN_FRACTION, float("inf")
            no_split_ms = round(timed(cp_step), 2)          # neither overlap
            sfd.OVERLAP_MIN_FRACTION = saved
            saved, sfd.PIPELINE_PIECES = sfd.PIPELINE_PIECES, 1
            whole_fwd_ms = round(timed(cp_step), 2)         # the backward's only
            sfd.PIPELINE_PIECES = saved
        with torch.no_grad():
            cp_fwd_ms = timed(lambda: sfd.sparse_attention(q, k, v, pattern, **kw))
            out = sfd.sparse_attention(q, k, v, pattern, **kw)
        kern = kernel_only(plan, 1, H, H, d, dev, dtype, backend, scale)
        kern_max, kern_min = _reduce(kern, dist.ReduceOp.MAX), -_reduce(-kern, dist.ReduceOp.MAX)
        stats = torch.tensor([plan.layout.nnz, plan.blocks_received, plan.num_guests], dtype=torch.float64,
                             device="cpu" if smoke else dev)
        per_rank = [torch.zeros_like(stats) for _ in range(world)]
        dist.all_gather(per_rank, stats)
        gathered = [torch.empty_like(out) for _ in range(world)] if rank == 0 else None
        dist.gather(out.contiguous(), gathered, dst=0)
        one_ms = one_fwd_ms = err = None
        if baseline:
            if rank == 0:
                fq, fk, fv = (t.detach().clone().requires_grad_(True) for t in full[:3])
                one = dict(block_size=bs, causal=causal, backend=backend, cu_seqlens=cu)

                def one_step():
                    o = sf.sparse_attention(fq, fk, fv, pattern, **one)
                    torch.autograd.grad(o, (fq, fk, fv), full[3])
                one_ms = timed(one_step, barrier=False)
                with torch.no_grad():
                    one_fwd_ms = timed(lambda: sf.sparse_attention(fq, fk, fv, pattern, **one), barrier=False)
                    ref = sf.sparse_attention(fq, fk, fv, pattern, **one)
                got = torch.empty_like(ref)
                for r in range(world):
                    got.index_copy_(2, sfd.shard_index(N, world, r, sharding, dev), gathered[r])
                err = ((got.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                del fq, fk, fv, ref, got
            dist.barrier()
        row = dict(case=name, N=N, world=world, causal=causal, sharding=sharding,
                   cp_fwd_bwd_ms=round(cp_ms, 2), cp_fwd_ms=round(cp_fwd_ms, 2),
                   cp_fwd_bwd_no_overlap_ms=no_split_ms, cp_fwd_bwd_forward_whole_ms=whole_fwd_ms,
                   one_gpu_fwd_bwd_ms=one_ms and round(one_ms, 2),
                   one_gpu_fwd_ms=one_fwd_ms and round(one_fwd_ms, 2),
                   speedup_fwd_bwd=one_ms and round(one_ms / cp_ms, 3),
                   speedup_fwd=one_fwd_ms and round(one_fwd_ms / cp_fwd_ms, 3),
                   kernel_fwd_bwd_ms_slowest_rank=round(kern_max, 2),
                   kernel_fwd_bwd_ms_fastest_rank=round(kern_min, 2),
                   blocks_per_rank=[int(s[0]) for s in per_rank],
                   key_blocks_received_per_rank=[int(s[1]) for s in per_rank],
                   guest_blocks_per_rank=[int(s[2]) for s in per_rank],
                   plan_s_rank0=round(plan_s, 3), max_rel_err_vs_one_gpu=err, rank0_peak_gib=round(peak, 2))
        if rank == 0:
            print(json.dumps(row), flush=True)
            rows.append(row)
            _write(out_dir, meta, rows)
        del q, k, v, do, full, out
        if not smoke:
            torch.cuda.empty_cache()
    if not args.no_torch_cp and (not wanted or any(w in "dense" for w in wanted)):
        N = 4096 if smoke else 1 << 18
        ms, note = torch_context_parallel(N, H, d, dev, dtype, world)
        ours = next((r["cp_fwd_bwd_ms"] for r in rows if r["case"].startswith("dense causal")), None)
        row = dict(case=f"torch context_parallel (SDPA, ring) dense causal, {N >> 10}K", N=N, world=world,
                   causal=True, cp_fwd_bwd_ms=ms and round(ms, 2),
                   sparseflash_dense_causal_fwd_bwd_ms=ours,
                   sparseflash_speedup_over_torch_cp=round(ms / ours, 3) if ms and ours else None, note=note)
        if rank == 0:
            print(json.dumps(row), flush=True)
            rows.append(row)
            _write(out_dir, meta, rows)
    dist.destroy_process_group()


def _write(out_dir: Path, meta, rows) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "distributed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "distributed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows)


if __name__ == "__main__":
    main()
