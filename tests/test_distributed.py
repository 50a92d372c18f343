"""Context parallelism on gloo processes (CPU): each rank's shard of the output and of the
gradients equals the one-process result, on local, bigbird and dense patterns, causal and
not, with GQA, for 2 and 4 ranks; and the exchange moves only the blocks the rows read."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sparseflash as sf

CASES = [
    # pattern, causal, window
    (sf.local(1), True, None),
    (sf.local(2) | sf.global_blocks(1), False, None),
    (sf.bigbird(window=1, globals=1, random=2), True, None),
    (sf.dense(), True, None),
    (sf.dense(), False, (20, 10)),
]
B, H, HKV, N, D, BS = 2, 4, 2, 128, 16, 16


def _worker(rank, world, init_file, failures):
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        import sparseflash.distributed as sfd
        from sparseflash.distributed import sparse_attention as cp_attention

        n = N // world
        sl = slice(rank * n, (rank + 1) * n)
        # both ways of running a rank: two parts overlapping the exchange (merged through the
        # LSE), and one call after a small exchange
        for ci, (pattern, causal, window, fraction) in enumerate(
                [c + (f,) for c in CASES for f in (0.0, float("inf"))]):
            sfd.OVERLAP_MIN_FRACTION = fraction
            sfd.shard_plan.cache_clear()
            g = torch.Generator().manual_seed(ci)
            q, k, v, do = (torch.randn(B, h, N, D, generator=g, dtype=torch.float64)
                           for h in (H, HKV, HKV, H))
            q, k, v = (t.requires_grad_(True) for t in (q, k, v))
            ref, ref_lse = sf.sparse_attention(q, k, v, pattern, block_size=BS, causal=causal,
                                               window_size=window, return_lse=True, backend="torch")
            ref_grads = torch.autograd.grad(ref, (q, k, v), do)
            qs, ks, vs = (t.detach()[:, :, sl].clone().requires_grad_(True) for t in (q, k, v))
            out, lse = cp_attention(qs, ks, vs, pattern, block_size=BS, causal=causal,
                                    window_size=window, return_lse=True, backend="torch")
            grads = torch.autograd.grad(out, (qs, ks, vs), do[:, :, sl])
            torch.testing.assert_close(out, ref[:, :, sl], atol=1e-10, rtol=0, msg=lambda m: f"case {ci} out: {m}")
            torch.testing.assert_close(lse, ref_lse[:, :, sl], atol=1e-10, rtol=0, msg=lambda m: f"case {ci} lse: {m}")
            for name, g_, r_ in zip("qkv", grads, ref_grads):
                torch.testing.assert_close(g_, r_[:, :, sl], atol=1e-10, rtol=0,
                                           msg=lambda m: f"case {ci} d{name}: {m}")
        dist.destroy_process_group()
    except Exception as exc:  # surfaced by the parent with the rank
        failures.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


@pytest.mark.parametrize("world", [2, 4])
def test_shards_equal_one_process(world):
    ctx = mp.get_context("spawn")
    failures = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        procs = [ctx.Process(target=_worker, args=(r, world, init_file, failures)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
        errors = []
        while not failures.empty():
            errors.append(failures.get())
        assert not errors, "\n".join(errors)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def test_exchange_moves_only_the_blocks_rows_read():
    from sparseflash.distributed import shard_plan

    # local(1) on 4 ranks of 16 blocks each: a rank reads one block from each neighbour
    plans = [shard_plan(sf.local(1), 1024, 4, r, 16, False, 1) for r in range(4)]
    assert plans[1].recv == ((15,), (), (32,), ())
    assert plans[0].send == ((), (15,), (), ())
    assert all(p.recv[q] == plans[q].send[p.rank] for p in plans for q in range(4))
    # a global column goes to every rank; causal local reads only the left neighbour
    plans = [shard_plan(sf.local(1) | sf.global_blocks(1), 1024, 4, r, 16, True, 1) for r in range(4)]
    assert [p.blocks_received for p in plans] == [0, 2, 2, 2]


def test_bad_input():
    from sparseflash.distributed import sparse_attention as cp_attention

    q = torch.zeros(1, 2, 64, 16)
    with pytest.raises(ValueError, match="not initialised"):
        cp_attention(q, q, q, sf.local(1), block_size=16)
