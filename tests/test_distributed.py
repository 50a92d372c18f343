"""Context parallelism on gloo processes (CPU): each rank's shard of the output and of the
gradients equals the one-process result, on local, bigbird and dense patterns, causal and
not, with GQA, for 2 and 4 ranks, on contiguous and zigzag shards, with and without guest
query blocks; and the plan moves only the blocks the rows read, and balances causal work."""
from __future__ import annotations

import os
import queue
import tempfile
import time

import numpy as np
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


# softcap and ALiBi across shards: (pattern, causal, window, sharding, guest fraction,
# softcap, ALiBi slopes: None, "h" (num_heads,) or "bh" (batch, num_heads), key padding: see
# _padding); ALiBi keeps exact key offsets (no guests even at fraction 1e-9), contiguous
# shards only
SOFTCAP_RUNS = [
    (sf.bigbird(window=1, globals=1, random=2), True, None, "zigzag", 0.5, 5.0, None, None),
    (sf.local(2) | sf.global_blocks(1), False, None, "contiguous", 1e-9, 2.0, None, None),
]
ALIBI_RUNS = [
    (sf.bigbird(window=1, globals=1, random=2), True, None, "contiguous", 1e-9, 0.0, "h", None),
    (sf.local(2) | sf.global_blocks(1), False, None, "contiguous", 0.5, 2.0, "bh", None),
    (sf.dense(), True, None, "contiguous", 0.5, 0.0, "bh", None),
    (sf.dense(), False, (20, 10), "contiguous", 0.5, 0.0, "h", None),
]
# key-padding masks across shards: guests (which read the host's keys and its mask), zigzag,
# an exact-offset buffer (a window, ALiBi) whose gaps are never read, softcap
PADDING_RUNS = [
    (sf.local(2) | sf.global_blocks(1), False, None, "contiguous", 1e-9, 0.0, None, "empty"),
    (sf.bigbird(window=1, globals=1, random=2), True, None, "zigzag", 0.5, 0.0, None, "tail"),
    (sf.dense(), False, (20, 10), "contiguous", 0.5, 0.0, None, "empty"),
    (sf.local(2) | sf.global_blocks(1), True, None, "contiguous", 0.5, 0.0, "bh", "holes"),
    (sf.dense(), True, None, "zigzag", 0.5, 2.0, None, "tail"),
]


def _padding(kind, batch, generator):
    """A key-padding mask (bool ``(batch, N)``, True = attend) of ``kind``: None; "tail" (each
    element keeps a prefix of keys, ending inside a block, the second element's within the
    first third of the sequence); "holes" (a random 30 % of keys padded, and one whole block);
    "empty" ("holes", and the last element pads every key: its rows give 0 and an LSE of
    -inf)."""
    if kind is None:
        return None
    if kind == "tail":
        mask = torch.zeros(batch, N, dtype=torch.bool)
        for b in range(batch):
            mask[b, :N - 3 - b * (N // 2 + 20)] = True
        return mask
    mask = torch.rand(batch, N, generator=generator) > 0.3
    mask[:, 3 * BS:4 * BS] = False
    if kind == "empty":
        mask[-1] = False
    return mask


def _slopes(kind, batch, generator):
    """ALiBi slopes of ``kind`` (None, "h" or "bh"), float32 as the API asks."""
    if kind is None:
        return None
    shape = (H,) if kind == "h" else (batch, H)
    return torch.rand(shape, generator=generator, dtype=torch.float64).mul(0.5).add(0.01).float()


def _runs(world):
    """(pattern, causal, window, sharding, guest fraction): every case on both shardings
    (zigzag takes no window); the default guest rule and "every cross-rank read is a guest"
    (on 4 ranks only for the sparse cases: 4 processes share the test machine's cores)."""
    for ci, (pattern, causal, window) in enumerate(CASES):
        for sharding in ("contiguous", "zigzag"):
            if sharding == "zigzag" and window is not None:
                continue
            for fraction in (0.5, 1e-9):
                if fraction < 0.5 and (window is not None or world > 2 and ci not in (1, 2)):
                    continue
                yield pattern, causal, window, sharding, fraction, 0.0, None, None
    yield from SOFTCAP_RUNS
    yield from ALIBI_RUNS
    yield from PADDING_RUNS


# the Triton kernels (interpreted on CPU) in buffer coordinates: packed received blocks,
# guests' rows after the shard's, a zigzag shard's two chunks
TRITON_RUNS = [
    (sf.local(2) | sf.global_blocks(1), False, None, "contiguous", 0.5, 0.0, None, None),
    (sf.bigbird(window=1, globals=1, random=2), True, None, "zigzag", 0.5, 3.0, None, "holes"),
    (sf.local(2) | sf.global_blocks(1), True, None, "contiguous", 0.5, 0.0, "h", None),
]


def _on_gpus(backend: str) -> bool:
    """The Triton runs go to the GPUs (NCCL, a GPU per rank) where the interpreter is off."""
    return backend == "triton" and os.environ.get("TRITON_INTERPRET") != "1" and torch.cuda.is_available()


def _init_group(rank, world, init_file, backend):
    """Join the process group: NCCL with a GPU per rank for compiled Triton runs, else gloo
    on the CPU. Returns the rank's device."""
    gpus = _on_gpus(backend)
    if gpus:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if gpus else "gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    return torch.device("cuda", rank) if gpus else torch.device("cpu")


def _worker(rank, world, init_file, failures, backend="torch"):
    try:
        dev = _init_group(rank, world, init_file, backend)
        import sparseflash.distributed as sfd

        # the interpreter runs a program at a time: one batch element keeps it short
        runs, dtype, atol, batch = ((_runs(world), torch.float64, 1e-10, B) if backend == "torch"
                                    else (TRITON_RUNS, torch.float32, 2e-5, 1))
        for ci, (pattern, causal, window, sharding, fraction, softcap, alibi, padding) in enumerate(runs):
            sfd.GUEST_MIN_FRACTION = fraction
            sfd.GUEST_COST = None if fraction < 0.5 else 5 / 4     # None: every candidate goes
            sfd.shard_plan.cache_clear()
            case = (f"case {ci} ({pattern}, causal={causal}, {sharding}, guests>={fraction}, softcap={softcap}, "
                    f"alibi={alibi}, padding={padding})")
            g = torch.Generator().manual_seed(ci)
            q, k, v, do = (torch.randn(batch, h, N, D, generator=g, dtype=dtype).to(dev) for h in (H, HKV, HKV, H))
            slopes = _slopes(alibi, batch, g)
            slopes = None if slopes is None else slopes.to(dev)
            kpm = _padding(padding, batch, g)
            kpm = None if kpm is None else kpm.to(dev)
            dlse = torch.randn(batch, H, N, generator=g, dtype=dtype).to(dev)
            q, k, v = (t.requires_grad_(True) for t in (q, k, v))
            ref, ref_lse = sf.sparse_attention(q, k, v, pattern, block_size=BS, causal=causal,
                                               window_size=window, return_lse=True, backend=backend,
                                               softcap=softcap, alibi_slopes=slopes, key_padding_mask=kpm)
            # the LSE's gradient too (the guests' pieces carry it)
            ref_grads = torch.autograd.grad((ref, ref_lse), (q, k, v), (do, dlse))
            qs, ks, vs = (sfd.shard(t.detach(), world, rank, sharding) for t in (q, k, v))
            if ci % 2:     # shards in (batch, tokens, heads, d) memory: strided rows
                qs, ks, vs = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (qs, ks, vs))
            qs, ks, vs = (t.requires_grad_(True) for t in (qs, ks, vs))
            out, lse = sfd.sparse_attention(qs, ks, vs, pattern, block_size=BS, causal=causal,
                                            window_size=window, return_lse=True, backend=backend,
                                            sharding=sharding, softcap=softcap, alibi_slopes=slopes,
                                            key_padding_mask=None if kpm is None else sfd.shard(kpm, world, rank,
                                                                                                sharding, dim=1))
            grads = torch.autograd.grad((out, lse), (qs, ks, vs),
                                        (sfd.shard(do, world, rank, sharding), sfd.shard(dlse, world, rank, sharding)))
            mine = lambda t: sfd.shard(t.detach(), world, rank, sharding)  # noqa: E731
            torch.testing.assert_close(out, mine(ref), atol=atol, rtol=0, msg=lambda m: f"{case} out: {m}")
            torch.testing.assert_close(lse, mine(ref_lse), atol=atol, rtol=0, msg=lambda m: f"{case} lse: {m}")
            for name, g_, r_ in zip("qkv", grads, ref_grads):
                torch.testing.assert_close(g_, mine(r_), atol=atol, rtol=0, msg=lambda m: f"{case} d{name}: {m}")
        dist.destroy_process_group()
    except Exception as exc:  # surfaced by the parent with the rank
        failures.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


_STUCK_S = 300      # a rank still running this long after the start is reported and terminated


def _traced(target, dump, *args):
    """A rank's entry point: if it still runs 20 s before ``_STUCK_S``, faulthandler writes
    every thread's Python stack to ``dump`` (and "worker returned" follows there once the
    worker is done), so that ``_spawn`` can say where a stuck rank was: in the worker, or in
    the teardown after it (run33: a GPU rank that never ended left nothing to go on)."""
    import faulthandler

    f = open(dump, "w")        # kept open: the dump may come during the interpreter's teardown
    faulthandler.dump_traceback_later(_STUCK_S - 20, file=f)
    target(*args)
    f.write("worker returned\n")
    f.flush()


def _spawn(world, backend="torch", target=None):
    ctx = mp.get_context("spawn")
    failures = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        # a worker of its own takes a backend only when one is named
        args = (lambda r: (r, world, init_file, failures)) if target and backend == "torch" else \
            (lambda r: (r, world, init_file, failures, backend))
        dumps = [os.path.join(tmp, f"stack{r}.txt") for r in range(world)]
        procs = [ctx.Process(target=_traced, args=(target or _worker, dumps[r], *args(r)))
                 for r in range(world)]
        for p in procs:
            p.start()
        # the failures are read while the ranks run: a rank whose message fills the pipe
        # cannot exit before it is read (multiprocessing's "joining processes that use queues")
        errors = []
        deadline = time.monotonic() + _STUCK_S
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            try:
                errors.append(failures.get(timeout=0.5))
            except queue.Empty:
                pass
        stuck = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=10)
        while True:
            try:
                errors.append(failures.get(timeout=0.1))
            except queue.Empty:
                break
        assert not errors, "\n".join(errors)
        where = "".join(f"\n-- rank {r}:\n" + (open(dumps[r]).read().strip() or "(no stack written)")
                        for r in stuck)
        assert not stuck, f"ranks {stuck} of {world} still ran after {_STUCK_S} s (terminated){where}"
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def _dropout_worker(rank, world, init_file, failures):
    """Dropout across shards (float64, torch backend): reproducible under a seed, unbiased,
    and the backward is the derivative of the forward under a fixed seed (central
    differences of the global loss, guests forced on one run)."""
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        import sparseflash.distributed as sfd

        p = 0.25
        for ci, (pattern, causal, sharding, fraction) in enumerate([
                (sf.bigbird(window=1, globals=1, random=2), True, "zigzag", 0.5),
                (sf.local(2) | sf.global_blocks(1), False, "contiguous", 1e-9)]):
            sfd.GUEST_MIN_FRACTION = fraction
            sfd.GUEST_COST = None if fraction < 0.5 else 5 / 4
            sfd.shard_plan.cache_clear()
            case = f"case {ci} ({pattern}, {sharding}, guests>={fraction})"
            g = torch.Generator().manual_seed(100 + ci)
            q, k, v, w = (torch.randn(1, h, N, D, generator=g, dtype=torch.float64) for h in (H, HKV, HKV, H))
            qs, ks, vs, ws = (sfd.shard(t, world, rank, sharding) for t in (q, k, v, w))
            kw = dict(block_size=BS, causal=causal, sharding=sharding, backend="torch")

            def run(seed, drop=p, shards=(qs, ks, vs)):
                torch.manual_seed(seed)
                return sfd.sparse_attention(*shards, pattern, dropout_p=drop, **kw)
            a, b, c = run(1), run(1), run(2)
            # a seed fixes the mask: one seed's two calls agree to rounding, while another
            # seed's mask moves entries by far more (3.3 in case 0). (Bit equality is not asked for: CI once saw
            # two calls differ on one rank, in how much was not recorded; the message now says.)
            diff = (a - b).abs().nan_to_num(float("inf"))
            # where any rank's two calls differ at all, every rank makes a third (the calls are
            # collective), so that the message says which of the two was the odd one
            odd = torch.tensor([float(not torch.equal(a, b))])
            dist.all_reduce(odd, op=dist.ReduceOp.MAX)
            third = ""
            if odd.item():
                d = run(1)
                third = f"; a third call equals the first: {torch.equal(d, a)}, the second: {torch.equal(d, b)}"
            assert diff.max() <= 1e-12, (f"{case}: one seed gave two outputs (max |a-b| {diff.max().item():.3g}, "
                                         f"{int((diff > 0).sum())} of {a.numel()} differ, in rows "
                                         f"{sorted(set((diff > 0).nonzero()[:, 2].tolist()))[:16]}; NaN in a "
                                         f"{int(a.isnan().sum())}, in b {int(b.isnan().sum())}{third})")
            assert (a - c).abs().max() > 1e-2, f"{case}: two seeds gave one output"
            assert not torch.equal(a, run(1, 0.0)), f"{case}: dropout changed nothing"
            # unbiased: the mean over draws tends to the undropped output (a lost 1/(1-p)
            # scale would leave a 25 % bias). 512 draws in one call: the batch elements draw
            # independent masks.
            ref = run(0, 0.0)
            mean = run(3, shards=tuple(t.expand(512, -1, -1, -1) for t in (qs, ks, vs))).mean(0, keepdim=True)
            err = torch.tensor([(mean - ref).abs().max().item(), ref.abs().max().item()], dtype=torch.float64)
            dist.all_reduce(err, op=dist.ReduceOp.MAX)
            assert err[0] / err[1] < 0.08, f"{case}: mean over draws off by {err[0] / err[1]:.3f}"
            # the backward under a fixed seed is the derivative of that forward
            leaves = [t.clone().requires_grad_(True) for t in (qs, ks, vs)]
            out = run(7, shards=leaves)
            grads = torch.autograd.grad((out * ws).sum(), leaves)
            gu = torch.Generator().manual_seed(200 + ci)
            dirs = [sfd.shard(torch.randn(1, h, N, D, generator=gu, dtype=torch.float64), world, rank, sharding)
                    for h in (H, HKV, HKV)]
            eps = 1e-6
            loss = []
            for sign in (1, -1):
                moved = [t + sign * eps * u for t, u in zip((qs, ks, vs), dirs)]
                loss.append((run(7, shards=moved) * ws).sum())
            vals = torch.stack([(loss[0] - loss[1]) / (2 * eps),
                                sum((gr * u).sum() for gr, u in zip(grads, dirs))])
            dist.all_reduce(vals)
            assert torch.isclose(vals[0], vals[1], rtol=1e-6, atol=1e-8), f"{case}: {vals.tolist()}"
        dist.destroy_process_group()
    except Exception as exc:  # surfaced by the parent with the rank
        failures.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


# packed documents across shards (batch 1): (pattern, causal, window, sharding, guest fraction,
# ALiBi, cu_seqlens over N = 128 tokens); offsets are multiples of BS = 16: a one-block
# document, an empty one, guests forced, zigzag, a window and ALiBi's exact buffer
DOC_RUNS = [
    (sf.local(2) | sf.global_blocks(1), False, None, "contiguous", 1e-9, None, [0, 32, 48, 96, 128]),
    (sf.bigbird(window=1, globals=1, random=2), True, None, "zigzag", 0.5, None, [0, 64, 64, 112, 128]),
    (sf.dense(), True, (20, 10), "contiguous", 0.5, None, [0, 48, 128]),
    (sf.local(1) | sf.global_blocks(1), True, None, "contiguous", 0.5, "h", [0, 16, 80, 128]),
]


def _documents_worker(rank, world, init_file, failures, backend="torch"):
    """Packed documents across shards against the one-process ``cu_seqlens`` call, output,
    LSE and all gradients; then documents of any length (one of a single token), each padded
    to a block multiple with its padded keys masked, against the one-process call of the
    unpadded documents, on the real tokens (the padded rows' gradients are zero)."""
    try:
        dev = _init_group(rank, world, init_file, backend)
        import sparseflash.distributed as sfd

        dtype, atol = (torch.float64, 1e-10) if backend == "torch" else (torch.float32, 2e-5)
        runs = DOC_RUNS if backend == "torch" else DOC_RUNS[1:2]
        for ci, (pattern, causal, window, sharding, fraction, alibi, docs) in enumerate(runs):
            sfd.GUEST_MIN_FRACTION = fraction
            sfd.GUEST_COST = None if fraction < 0.5 else 5 / 4
            sfd.shard_plan.cache_clear()
            case = f"docs case {ci} ({pattern}, causal={causal}, {sharding}, docs={docs}, alibi={alibi})"
            g = torch.Generator().manual_seed(40 + ci)
            q, k, v, do = (torch.randn(1, h, N, D, generator=g, dtype=dtype).to(dev) for h in (H, HKV, HKV, H))
            dlse = torch.randn(1, H, N, generator=g, dtype=dtype).to(dev)
            slopes = _slopes(alibi, 1, g)
            slopes = None if slopes is None else slopes.to(dev)
            cu = torch.tensor(docs, dtype=torch.int32, device=dev)
            q, k, v = (t.requires_grad_(True) for t in (q, k, v))
            kw = dict(block_size=BS, causal=causal, window_size=window, backend=backend, alibi_slopes=slopes,
                      cu_seqlens=cu, return_lse=True)
            ref, ref_lse = sf.sparse_attention(q, k, v, pattern, **kw)
            ref_grads = torch.autograd.grad((ref, ref_lse), (q, k, v), (do, dlse))
            mine = lambda t: sfd.shard(t.detach(), world, rank, sharding)  # noqa: E731
            shards = [mine(t).requires_grad_(True) for t in (q, k, v)]
            out, lse = sfd.sparse_attention(*shards, pattern, sharding=sharding, **kw)
            grads = torch.autograd.grad((out, lse), shards, (mine(do), mine(dlse)))
            torch.testing.assert_close(out, mine(ref), atol=atol, rtol=0, msg=lambda m: f"{case} out: {m}")
            torch.testing.assert_close(lse, mine(ref_lse), atol=atol, rtol=0, msg=lambda m: f"{case} lse: {m}")
            for name, g_, r_ in zip("qkv", grads, ref_grads):
                torch.testing.assert_close(g_, mine(r_), atol=atol, rtol=0, msg=lambda m: f"{case} d{name}: {m}")

        # unaligned documents (30, 45, 1 and 43 tokens), padded to 32, 48, 16 and 48, then a
        # padding document to N = 192 (12 blocks: 6 a rank on 2, 3 on 4)
        lens, padded_lens = [30, 45, 1, 43], [32, 48, 16, 48, 48]
        total, Np = sum(lens), sum(padded_lens)
        real = torch.cat([torch.arange(a, a + n) for a, n in zip(np.cumsum([0] + padded_lens[:-1]), lens)]).to(dev)
        kpm = torch.zeros(1, Np, dtype=torch.bool, device=dev)
        kpm[0, real] = True
        g = torch.Generator().manual_seed(77)
        q, k, v, do = (torch.randn(1, h, total, D, generator=g, dtype=dtype).to(dev) for h in (H, HKV, HKV, H))
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
        pattern = sf.local(1) | sf.global_blocks(1)
        kw = dict(block_size=BS, causal=True, backend=backend)
        ref = sf.sparse_attention(q, k, v, pattern, cu_seqlens=torch.tensor(np.cumsum([0] + lens), dtype=torch.int32, device=dev),
                                  **kw)
        ref_grads = torch.autograd.grad(ref, (q, k, v), do)

        def spread(t):                      # real tokens at their padded rows, zeros between
            out = t.new_zeros(t.shape[:2] + (Np,) + t.shape[3:])
            out[:, :, real] = t.detach()
            return out
        mine = lambda t: sfd.shard(t, world, rank)  # noqa: E731
        shards = [mine(spread(t)).requires_grad_(True) for t in (q, k, v)]
        out = sfd.sparse_attention(*shards, pattern, cu_seqlens=torch.tensor(np.cumsum([0] + padded_lens), device=dev),
                                   key_padding_mask=mine(kpm.unsqueeze(1)).squeeze(1), **kw)
        grads = torch.autograd.grad(out, shards, mine(spread(do)))
        mask = mine(kpm.unsqueeze(1)).squeeze(1)[0]            # this rank's real rows
        torch.testing.assert_close(out[:, :, mask], mine(spread(ref))[:, :, mask], atol=atol, rtol=0)
        for name, g_, r_ in zip("qkv", grads, ref_grads):
            torch.testing.assert_close(g_, mine(spread(r_)), atol=atol, rtol=0, msg=lambda m: f"padded d{name}: {m}")
        dist.destroy_process_group()
    except Exception as exc:  # surfaced by the parent with the rank
        failures.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


def _padded_pieces_worker(rank, world, init_file, failures):
    """A key-padding mask at batch 1, where the forward's exchange goes in pieces of the KV
    heads (each piece's call takes the whole buffer mask), against the one-process result."""
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        import sparseflash.distributed as sfd

        pattern, Hkv = sf.local(2), 2
        plan = sfd.shard_plan(pattern, N, world, rank, BS, True, H, None, "contiguous", Hkv)
        assert sfd._pipeline(plan, 1, Hkv, sfd._NO_MODS, padded=True) == (2, 1)
        g = torch.Generator().manual_seed(11)
        q, k, v, do = (torch.randn(1, h, N, D, generator=g, dtype=torch.float64) for h in (H, Hkv, Hkv, H))
        kpm = _padding("holes", 1, g)
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
        ref = sf.sparse_attention(q, k, v, pattern, block_size=BS, causal=True, key_padding_mask=kpm,
                                  backend="torch")
        ref_grads = torch.autograd.grad(ref, (q, k, v), do)
        mine = lambda t: sfd.shard(t.detach(), world, rank)  # noqa: E731
        shards = [mine(t).requires_grad_(True) for t in (q, k, v)]
        out = sfd.sparse_attention(*shards, pattern, block_size=BS, causal=True, backend="torch",
                                   key_padding_mask=sfd.shard(kpm, world, rank, dim=1))
        grads = torch.autograd.grad(out, shards, mine(do))
        torch.testing.assert_close(out, mine(ref), atol=1e-10, rtol=0)
        for name, g_, r_ in zip("qkv", grads, ref_grads):
            torch.testing.assert_close(g_, mine(r_), atol=1e-10, rtol=0, msg=lambda m: f"d{name}: {m}")
        dist.destroy_process_group()
    except Exception as exc:  # surfaced by the parent with the rank
        failures.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


def _check_gpu_shards(out, grads, ref, ref_grads, world, rank, dtype, what, sharding="contiguous"):
    """A rank's output and gradients on the GPU against its shard of the one-process ones:
    the output to 2e-5 (fp32) or 2e-2 (bf16), each gradient's largest error relative to its
    largest value below 1e-4 or 3e-2."""
    import sparseflash.distributed as sfd

    torch.cuda.synchronize()
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), sfd.shard(ref.detach(), world, rank, sharding).float(), atol=tol, rtol=0)
    for name, got, want in zip("qkv", grads, ref_grads):
        want = sfd.shard(want, world, rank, sharding).float()
        err = ((got.float() - want).abs().max() / want.abs().max()).item()
        assert err < (1e-4 if dtype == torch.float32 else 3e-2), f"{what}d{name}: relative error {err}"


def _gpu_worker(rank, world, init_file, failures):
    """Two ranks on one GPU: the pipelined forward (pieces of the heads at batch 1, of the
    batch at batch 2) and the split backward (its first part and the sends on a side stream)
    with the compiled kernels (the sm_90 ones at bf16, d=128, block 128), under a caller's
    stream, against the one-process output and gradients. The exchange goes through the
    host (gloo moves CPU tensors; each piece lands with an asynchronous device copy at its
    wait(), so the pieces' attention must wait for exactly their own piece). Then ALiBi's
    exact-offset buffer, and packed documents with a key-padding mask."""
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        import sparseflash.distributed as sfd

        real_p2p = sfd._p2p

        def host_p2p(plan, group, messages):
            host = [(p, None if out is None else out.contiguous().cpu(),
                     None if into is None else torch.empty(into.shape, dtype=into.dtype, pin_memory=True))
                    for p, out, into in messages]
            wait_host = real_p2p(plan, group, host)

            def wait():
                wait_host()
                for (_, _, into), (_, _, h) in zip(messages, host):
                    if into is not None:      # pinned and asynchronous: a pageable copy would
                        into.copy_(h, non_blocking=True)    # wait for every stream
            return wait
        sfd._p2p = host_p2p
        dev = torch.device("cuda", 0)
        for B, dtype, bs, d in ((1, torch.float32, 16, 16), (2, torch.bfloat16, 128, 128)):
            N = 8 * bs
            pattern = sf.bigbird(window=1, globals=1, random=2)
            g = torch.Generator().manual_seed(B)
            q, k, v, do = (torch.randn(B, h, N, d, generator=g).to(dev, dtype) for h in (4, 2, 2, 4))
            q, k, v = (t.requires_grad_(True) for t in (q, k, v))
            ref = sf.sparse_attention(q, k, v, pattern, block_size=bs, causal=True)
            ref_grads = torch.autograd.grad(ref, (q, k, v), do)
            ref = ref.detach()
            qs, ks, vs = (sfd.shard(t.detach(), world, rank, "zigzag").requires_grad_(True) for t in (q, k, v))
            plan = sfd.shard_plan(pattern, N, world, rank, bs, True, 4, None, "zigzag", 2)
            assert sfd._pipeline(plan, B, 2, (0.0, None, 0.0, (0, 0)))[0] > 1, "the case must pipeline"
            # on a stream of the caller's (the legacy default stream would wait for every
            # blocking stream by itself and hide a missing wait)
            torch.cuda.synchronize()
            with torch.cuda.stream(torch.cuda.Stream()):
                out = sfd.sparse_attention(qs, ks, vs, pattern, block_size=bs, causal=True, sharding="zigzag")
                # the split backward: its first part and the sends on a side stream
                grads = torch.autograd.grad(out, (qs, ks, vs), sfd.shard(do, world, rank, "zigzag"))
            _check_gpu_shards(out, grads, ref, ref_grads, world, rank, dtype, "", "zigzag")
        # ALiBi over exact key offsets (contiguous shards, the buffer spans back to the global
        # block), compiled kernels (sm_90 ones at bf16, d=128, block 128), causal and not
        for causal, dtype, bs, d in ((True, torch.bfloat16, 128, 128), (False, torch.float32, 16, 16)):
            N, B = 8 * bs, 2
            pattern = sf.local(1) | sf.global_blocks(1)
            g = torch.Generator().manual_seed(7)
            q, k, v, do = (torch.randn(B, h, N, d, generator=g).to(dev, dtype) for h in (4, 2, 2, 4))
            slopes = torch.rand(B, 4, generator=g).mul(0.05).add(0.01).to(dev)
            q, k, v = (t.requires_grad_(True) for t in (q, k, v))
            ref = sf.sparse_attention(q, k, v, pattern, block_size=bs, causal=causal, alibi_slopes=slopes)
            ref_grads = torch.autograd.grad(ref, (q, k, v), do)
            qs, ks, vs = (sfd.shard(t.detach(), world, rank).requires_grad_(True) for t in (q, k, v))
            out = sfd.sparse_attention(qs, ks, vs, pattern, block_size=bs, causal=causal, alibi_slopes=slopes)
            grads = torch.autograd.grad(out, (qs, ks, vs), sfd.shard(do, world, rank))
            _check_gpu_shards(out, grads, ref, ref_grads, world, rank, dtype, "alibi ")
        # packed documents on block boundaries with a key-padding mask (the buffer's mask and
        # a table set per batch element), compiled kernels (sm_90 ones at bf16, d=128)
        for dtype, bs, d in ((torch.bfloat16, 128, 128), (torch.float32, 16, 16)):
            N = 8 * bs
            pattern = sf.local(1) | sf.global_blocks(1)
            g = torch.Generator().manual_seed(9)
            q, k, v, do = (torch.randn(1, h, N, d, generator=g).to(dev, dtype) for h in (4, 2, 2, 4))
            kpm = (torch.rand(1, N, generator=g) > 0.2).to(dev)
            cu = torch.tensor([0, 3 * bs, 5 * bs, N], dtype=torch.int32, device=dev)
            q, k, v = (t.requires_grad_(True) for t in (q, k, v))
            kw = dict(block_size=bs, causal=True, key_padding_mask=kpm, cu_seqlens=cu)
            ref = sf.sparse_attention(q, k, v, pattern, **kw)
            ref_grads = torch.autograd.grad(ref, (q, k, v), do)
            qs, ks, vs = (sfd.shard(t.detach(), world, rank).requires_grad_(True) for t in (q, k, v))
            kw["key_padding_mask"] = sfd.shard(kpm, world, rank, dim=1)
            out = sfd.sparse_attention(qs, ks, vs, pattern, **kw)
            grads = torch.autograd.grad(out, (qs, ks, vs), sfd.shard(do, world, rank))
            _check_gpu_shards(out, grads, ref, ref_grads, world, rank, dtype, "docs ")
        sfd._p2p = real_p2p
        dist.destroy_process_group()
    except Exception as exc:  # surfaced by the parent with the rank
        failures.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


def test_pipelined_forward_on_one_gpu():
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("needs a GPU (compiled kernels, CUDA streams)")
    _spawn(2, target=_gpu_worker)


def test_dropout_across_shards():
    _spawn(2, target=_dropout_worker)


@pytest.mark.parametrize("world", [2, 4])
def test_packed_documents_across_shards(world):
    _spawn(world, target=_documents_worker)


def test_packed_documents_triton_kernels():
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no CUDA and no Triton interpreter")
    if _on_gpus("triton") and torch.cuda.device_count() < 2:
        pytest.skip("compiled kernels: needs 2 GPUs (a rank per GPU, NCCL)")
    _spawn(2, "triton", target=_documents_worker)


def test_key_padding_with_the_exchange_in_pieces():
    _spawn(2, target=_padded_pieces_worker)


@pytest.mark.parametrize("world", [2, 4])
def test_shards_equal_one_process(world):
    _spawn(world)


def test_triton_kernels_in_buffer_coordinates():
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no CUDA and no Triton interpreter")
    if _on_gpus("triton") and torch.cuda.device_count() < 2:
        pytest.skip("compiled kernels: needs 2 GPUs (a rank per GPU, NCCL)")
    _spawn(2, "triton")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bs,d", [(16, 3), (2, 1), (1, 1), (4, 5)])
def test_block_moves_match_token_indexing(dtype, bs, d):
    # the exchange's block gathers, scatters and sums view blocks as 8-, 4-byte or native
    # elements, whichever a block's bytes allow; each must equal plain token indexing
    from sparseflash.distributed import _add_blocks, _gather, _scatter

    g = torch.Generator().manual_seed(bs * 10 + d)
    x = torch.randn(2, 3, 8 * bs, d, generator=g).to(dtype)
    blocks = torch.tensor([5, 0, 7, 2])
    rows = (blocks[:, None] * bs + torch.arange(bs)).reshape(-1)
    assert torch.equal(_gather(x, blocks, bs), x.index_select(2, rows))
    src = torch.randn(2, 3, 4 * bs, d, generator=g).to(dtype)
    y = x.clone()
    _scatter(y, blocks, src, bs)
    assert torch.equal(y, x.index_copy(2, rows, src))
    y = x.clone()
    view = y[:, :, bs:]                       # a strided view (7 blocks), as the backward's dK is
    sub = torch.tensor([5, 0, 2])
    _add_blocks(view, sub, src[:, :, :3 * bs], bs)
    sub_rows = (sub[:, None] * bs + torch.arange(bs)).reshape(-1)
    want = x[:, :, bs:].index_add(2, sub_rows, src[:, :, :3 * bs])
    assert torch.equal(view, want) and torch.equal(y[:, :, :bs], x[:, :, :bs])


def _kernel_case(size):
    """(device, block, head_dim, dtype, N, layout) of the single-process kernel tests; "hopper":
    bf16, d=128, block 128, the shapes the sm_90 kernels take (skips off such a GPU)."""
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no CUDA and no Triton interpreter")
    if size == "hopper" and not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9):
        pytest.skip("needs an sm_90 GPU")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    bs, d, dtype = (16, 16, torch.float32) if size == "small" else (128, 128, torch.bfloat16)
    N = 8 * bs
    return dev, bs, d, dtype, N, sf.compile(sf.bigbird(window=1, globals=1, random=2), N, block_size=bs,
                                            causal=True)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["scale", "negative-scale"])
@pytest.mark.parametrize("marked", [(0, 3, 5), (), tuple(range(8))])
@pytest.mark.parametrize("size", ["small", "hopper"])
def test_split_backward_equals_one_launch(marked, size, sign, monkeypatch):
    # the backward's dK/dV launch cut in two (marked columns first, the sends in between):
    # every key tile runs exactly once, so the gradients are bitwise those of one launch, and
    # when ``between`` runs, dQ and the marked columns' dK/dV are already final (with a
    # negative scale too, which runs as -q and negates dQ back before ``between``). "hopper":
    # bf16, d=128, block 128, the shapes the sm_90 dK/dV kernel takes (GPU only), forced on
    # (it is the dispatcher's default here too; forcing keeps the test on it).
    from sparseflash.attention import _backward_impl, _forward_impl
    from sparseflash.kernels import launch

    dev, bs, d, dtype, N, layout = _kernel_case(size)
    if size == "hopper":
        monkeypatch.setattr(launch, "USE_HOPPER_BWD", True)
        # a split backward keeps the dQ kernel (dQ must be final after the first part); the
        # one launch compared with must too: the fused dQ sums by atomics, in a varying order
        monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", False)
    g = torch.Generator().manual_seed(len(marked))
    q, do = (torch.randn(1, 4, N, d, generator=g).to(dev, dtype) for _ in range(2))
    k, v = (torch.randn(1, 2, N, d, generator=g).to(dev, dtype) for _ in range(2))
    out, lse = _forward_impl(q, k, v, layout, sign * d ** -0.5, "triton", None)
    ref = _backward_impl(do, q, k, v, out, lse, None, layout, sign * d ** -0.5, "triton", None)
    if size == "hopper":
        assert launch._use_hopper_bwd(do, q, k, v, layout, scale=sign * d ** -0.5, config=None, softcap=0.0,
                                      alibi=None, dropout_p=0.0), "the sm_90 dK/dV kernel did not apply"
    first = np.zeros(8, dtype=bool)
    first[list(marked)] = True
    rows = torch.tensor([r for b in marked for r in range(bs * b, bs * b + bs)], dtype=torch.long, device=dev)
    seen = []
    got = _backward_impl(do, q, k, v, out, lse, None, layout, sign * d ** -0.5, "triton", None, dkdv_first=first,
                         between=lambda dq, dk, dv: seen.append((dq.clone(), dk.index_select(2, rows).clone(),
                                                                 dv.index_select(2, rows).clone())))
    for name, a, b in zip("qkv", got, ref):
        assert torch.equal(a, b), f"d{name} differs from the one-launch backward"
    assert len(seen) == 1
    assert torch.equal(seen[0][0], ref[0])
    assert torch.equal(seen[0][1], ref[1].index_select(2, rows))
    assert torch.equal(seen[0][2], ref[2].index_select(2, rows))


@pytest.mark.parametrize("size", ["small", "hopper"])
def test_forward_in_pieces_into_given_outputs(size):
    # the pipelined exchange's forward: pieces of the heads (batch 1) or of the batch, each
    # written into its slice of one output; bitwise the one call's result
    from sparseflash.attention import _forward_impl

    dev, bs, d, dtype, N, layout = _kernel_case(size)
    g = torch.Generator().manual_seed(3)
    for B, H, Hkv, dim in ((1, 4, 2, 1), (2, 4, 2, 0)):
        q = torch.randn(B, H, N, d, generator=g).to(dev, dtype)
        k, v = (torch.randn(B, Hkv, N, d, generator=g).to(dev, dtype) for _ in range(2))
        ref_out, ref_lse = _forward_impl(q, k, v, layout, d ** -0.5, "triton", None)
        out, lse = torch.empty_like(ref_out), torch.empty_like(ref_lse)
        for i in range(2):
            qs, kvs = ((B if dim == 0 else H) // 2, (B if dim == 0 else Hkv) // 2)
            got = _forward_impl(q.narrow(dim, i * qs, qs), k.narrow(dim, i * kvs, kvs), v.narrow(dim, i * kvs, kvs),
                                layout, d ** -0.5, "triton", None, out=out.narrow(dim, i * qs, qs),
                                lse=lse.narrow(dim, i * qs, qs))
            assert got[0].data_ptr() == out.narrow(dim, i * qs, qs).data_ptr()
        assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse), (B, H, dim)
    with pytest.raises(ValueError, match="out: expected a contiguous"):
        _forward_impl(q, k, v, layout, d ** -0.5, "triton", None, out=torch.empty_like(ref_out).transpose(0, 1))


def test_pipelined_exchange_agrees_across_ranks():
    # the forward's K/V exchange goes in pieces only where every rank cuts it alike: a rank
    # that receives little must still cut what it sends as its peer cuts what it receives
    from sparseflash.distributed import _NO_MODS, _pipeline, shard_plan

    drop = (0.0, None, 0.1, (0, 0))
    for pattern, causal, sharding, world in [(sf.bigbird(window=1, globals=1, random=2), True, "zigzag", 2),
                                             (sf.local(1), True, "contiguous", 4),
                                             (sf.local(2) | sf.global_blocks(1), False, "contiguous", 2),
                                             (sf.dense(), True, "zigzag", 4)]:
        plans = [shard_plan(pattern, 1024, world, r, 16, causal, 4, None, sharding, 2) for r in range(world)]
        for B, Hkv in ((1, 2), (2, 2), (6, 1), (1, 8)):
            got = {_pipeline(p, B, Hkv, _NO_MODS) for p in plans}
            assert len(got) == 1, (pattern, world, B, Hkv, got)
            assert {_pipeline(p, B, Hkv, drop) for p in plans} == {(1, 0)}     # never with dropout
            alibi = (0.0, torch.ones(4), 0.0, (0, 0))
            assert {_pipeline(p, B, Hkv, alibi) for p in plans} == {(1, 0)}    # nor with ALiBi
    plans = [shard_plan(sf.bigbird(window=1, globals=1, random=2), 1024, 2, r, 16, True, 4, None, "zigzag", 2)
             for r in range(2)]
    assert _pipeline(plans[0], 2, 2, _NO_MODS) == (2, 0)        # the batch
    assert _pipeline(plans[0], 1, 8, _NO_MODS) == (4, 1)        # KV heads, at most 4 pieces
    assert _pipeline(plans[0], 6, 2, _NO_MODS) == (3, 0)
    # a key-padding mask has a table set per batch element: pieces of the heads only
    assert _pipeline(plans[0], 2, 2, _NO_MODS, padded=True) == (1, 0)
    assert _pipeline(plans[0], 1, 8, _NO_MODS, padded=True) == (4, 1)
    # local(1): ranks receive 1 block of 8: too few to cut
    assert _pipeline(shard_plan(sf.local(1), 1024, 4, 1, 16, True, 4, None, "contiguous", 2), 2, 2, _NO_MODS) == (1, 0)


def test_exchange_moves_only_the_blocks_rows_read():
    from sparseflash.distributed import shard_plan

    # local(1) on 4 ranks of 16 blocks each: a rank reads one block from each neighbour
    plans = [shard_plan(sf.local(1), 1024, 4, r, 16, False, 1) for r in range(4)]
    assert plans[1].recv == ((15,), (), (32,), ())
    assert plans[0].send == ((), (15,), (), ())
    assert all(p.recv[q] == plans[q].send[p.rank] for p in plans for q in range(4))
    # a global column goes to every rank; causal local reads only the left neighbour; the
    # buffer holds the shard and the received blocks, nothing else
    plans = [shard_plan(sf.local(1) | sf.global_blocks(1), 1024, 4, r, 16, True, 1) for r in range(4)]
    assert [p.blocks_received for p in plans] == [0, 2, 2, 2]
    assert [p.layout.kv_len for p in plans] == [256, 288, 288, 288]


def test_documents_ending_at_shard_edges_exchange_nothing():
    # no token reads another document: documents that end where shards end move no block,
    # and one that spans the edge moves only its own blocks
    from sparseflash.distributed import shard_plan

    pattern = sf.local(2) | sf.global_blocks(1)
    for rank in range(4):
        plan = shard_plan(pattern, 1024, 4, rank, 16, True, 4, docs=(0, 256, 512, 768, 1024))
        assert plan.blocks_received == 0 and plan.num_guests == 0 and not any(plan.send), rank
        whole = shard_plan(pattern, 1024, 4, rank, 16, True, 4)
        assert rank == 0 or whole.blocks_received > 0
    # one document over ranks 1 and 2: rank 2 reads rank 1's blocks of it (its window's two
    # and the document's first block, 16, as a global column), never rank 0's
    plan = shard_plan(pattern, 1024, 4, 2, 16, True, 4, docs=(0, 256, 768, 1024))
    assert plan.recv[0] == () and plan.recv[3] == ()
    assert set(plan.recv[1]) == {16, 30, 31}


def test_global_row_goes_to_the_keys():
    from sparseflash.distributed import shard_plan

    # non-causal: block 0 is a global row reading every key; it is computed on every rank
    # against that rank's keys instead of pulling 3 shards to rank 0
    plans = [shard_plan(sf.local(1) | sf.global_blocks(1), 1024, 4, r, 16, False, 1) for r in range(4)]
    assert plans[0].guests_out == ((), (0,), (0,), (0,))
    assert [p.guests_in[0] for p in plans] == [(), (0,), (0,), (0,)]
    assert plans[0].recv == ((), (16,), (), ())              # the right neighbour's edge only
    assert all(p.num_guests <= 1 for p in plans)
    assert plans[1].recv == ((0, 15), (), (32,), ())         # the global column and two edges
    # the long row is split over the ranks: the work evens out
    work = [p.layout.nnz for p in plans]
    assert max(work) - min(work) <= 16, work


def test_exact_plans_keep_every_distance_and_host_no_guests():
    """With ``exact`` (ALiBi) every received key block sits at its true distance from the
    shard in the buffer, and no query block leaves its rank, even where the default plan
    sends the global row to the keys; zigzag is refused."""
    from sparseflash.distributed import shard_plan

    pattern = sf.local(1) | sf.global_blocks(1)
    for rank in range(4):
        packed = shard_plan(pattern, 1024, 4, rank, 16, False, 1)
        plan = shard_plan(pattern, 1024, 4, rank, 16, False, 1, exact=True)
        assert plan.num_guests == 0 and not any(plan.guests_out) and not plan.any_guests
        first = plan.own_blocks[0]
        for blocks, slots in zip(plan.recv, plan.recv_slots):
            for block, slot in zip(blocks, slots):
                assert slot * 16 - plan.own_row == (block - first) * 16
        # the rank computes exactly its own rows' blocks of the whole sequence
        rows = sf.compile(pattern, 1024, block_size=16).to_dense()[0][list(plan.own_blocks)]
        assert plan.layout.nnz == rows.sum()
    assert shard_plan(pattern, 1024, 4, 0, 16, False, 1).any_guests        # the default hosts the global row
    with pytest.raises(ValueError, match="contiguous"):
        shard_plan(pattern, 1024, 4, 0, 16, True, 1, None, "zigzag", exact=True)


def test_dense_causal_moves_keys_not_queries():
    from sparseflash.distributed import shard_plan

    # every block of rank 0's late chunk reads all of rank 1's keys: as guests they would
    # move rank 0's heaviest work to rank 1, so keys move instead
    plans = [shard_plan(sf.dense(), 2048, 2, r, 16, True, 4, None, "zigzag", 2) for r in range(2)]
    assert [p.num_guests for p in plans] == [0, 0]
    assert plans[0].blocks_received == 64 and plans[1].blocks_received == 32


def test_zigzag_balances_causal_work():
    from sparseflash.distributed import shard_chunks, shard_plan

    assert shard_chunks(1024, 4, 1, "zigzag") == ((128, 128), (768, 128))
    for world in (2, 4):
        for sharding, worst in (("contiguous", 2 * world - 1), ("zigzag", 1.0)):
            nnz = [shard_plan(sf.dense(), 2048, world, r, 16, True, 1, None, sharding).layout.nnz
                   for r in range(world)]
            # dense causal: rank W-1 has 2W-1 times rank 0's blocks on contiguous shards
            rel = 0.05 if sharding == "contiguous" else 0
            assert max(nnz) / min(nnz) == pytest.approx(worst, rel=rel), (sharding, nnz)
    # every block of the sequence is computed exactly once over the ranks
    total = sf.compile(sf.bigbird(window=1, globals=1, random=2), 2048, block_size=16, causal=True).nnz
    plans = [shard_plan(sf.bigbird(window=1, globals=1, random=2), 2048, 4, r, 16, True, 1, None, "zigzag")
             for r in range(4)]
    assert sum(p.layout.nnz for p in plans) == total
    assert np.isclose(max(p.layout.nnz for p in plans) / min(p.layout.nnz for p in plans), 1.0, atol=0.1)


def _plan_coverage(pattern, N, world, bs, causal, heads, window, sharding, docs, kpm):
    """How many times the ranks' plans compute each (head, query, key) token pair, in the
    whole sequence's positions: each rank's layout (with its per-batch padding tables when
    ``kpm`` is given) mapped back through its query rows (shard, then hosted guests' blocks)
    and its key buffer's slots. int ``[batch, heads, N, N]``."""
    import sparseflash.distributed as sfd

    B = 1 if kpm is None else kpm.shape[0]
    count = np.zeros((B, heads, N, N), dtype=np.int64)
    for rank in range(world):
        plan = sfd.shard_plan(pattern, N, world, rank, bs, causal, heads, window, sharding, heads, docs=docs)
        rows = sfd.shard_index(N, world, rank, sharding).numpy()
        hosted = [b for g in plan.guests_in for b in g]
        rows = np.concatenate([rows] + [np.arange(b * bs, (b + 1) * bs) for b in hosted])
        slots = plan.buffer_blocks()
        cols = (np.repeat(slots, bs) * bs + np.tile(np.arange(bs), slots.size))
        layout = plan.layout
        if kpm is not None:
            layout = sfd._buffer_padding(plan, kpm, "cpu")[0]
        for b in range(B):
            for h in range(heads):
                m = layout.to_token_mask(h, seq=b if kpm is not None else 0)
                assert not m[:, np.repeat(slots, bs) < 0].any(), "a gap of the buffer is read"
                qi, kj = np.nonzero(m)
                np.add.at(count[b, h], (rows[qi], cols[kj]), 1)
    return count


def test_plans_cover_every_token_pair_exactly_once():
    # random patterns, documents, padding, shardings, windows and guest rules: over all ranks,
    # every token pair of the one-process mask is computed exactly once, and no other
    import sparseflash.distributed as sfd
    from sparseflash.attention import resolve_layout
    from sparseflash.reference import token_mask

    rng = np.random.default_rng(2026)
    patterns = [sf.local(1), sf.local(2) | sf.global_blocks(1), sf.bigbird(window=1, globals=1, random=2),
                sf.dense(), sf.strided(3) | sf.local(1)]
    N, bs, heads = 256, 16, 2
    saved = sfd.GUEST_MIN_FRACTION, sfd.GUEST_COST
    try:
        for case in range(24):
            pattern = patterns[case % len(patterns)]
            world = (2, 4)[rng.integers(2)]
            sharding = ("contiguous", "zigzag")[rng.integers(2)]
            causal = bool(rng.integers(2))
            window = (int(rng.integers(0, 40)), int(rng.integers(-1, 40))) \
                if sharding == "contiguous" and rng.random() < 0.3 else None
            docs = None
            if rng.random() < 0.5:
                cuts = np.sort(rng.choice(np.arange(1, N // bs), int(rng.integers(1, 5)), replace=False))
                docs = (0, *(int(c) * bs for c in cuts), N)
            kpm = rng.random((2, N)) > 0.3 if rng.random() < 0.4 else None
            sfd.GUEST_MIN_FRACTION, sfd.GUEST_COST = (1e-9, None) if rng.random() < 0.5 else (0.5, 5 / 4)
            sfd.shard_plan.cache_clear()
            got = _plan_coverage(pattern, N, world, bs, causal, heads, window, sharding, docs, kpm)
            cu = None if docs is None else docs
            want = token_mask(resolve_layout(pattern, seq_len=N, kv_len=N, num_heads=heads, block_size=bs,
                                             causal=causal, window=window, cu_seqlens=cu, cu_seqlens_k=cu),
                              1).numpy()
            if kpm is not None:
                want = want & kpm[:, None, None, :]
            what = f"case {case}: {pattern}, W={world}, {sharding}, causal={causal}, window={window}, docs={docs}"
            assert got.max() <= 1, f"{what}: a pair computed twice"
            assert np.array_equal(got.astype(bool), np.broadcast_to(want, got.shape)), f"{what}: coverage differs"
    finally:
        sfd.GUEST_MIN_FRACTION, sfd.GUEST_COST = saved
        sfd.shard_plan.cache_clear()


def test_huge_plans_are_refused_before_allocating():
    # the plan evaluates the pattern over the whole sequence: dense at 2M tokens in blocks of
    # 16 would hold 8.6 billion blocks; refused at once, as compile refuses it (documents
    # compile each length, with the same check)
    import time

    from sparseflash.distributed import estimate_ranks, shard_plan

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="block_size=16"):
        shard_plan(sf.dense(), 1 << 21, 2, 0, 16, True, 1)
    with pytest.raises(ValueError, match="block_size=16"):
        shard_plan(sf.dense(), 1 << 21, 2, 0, 16, True, 1, docs=(0, 1 << 21))
    with pytest.raises(ValueError, match="block_size=16"):
        estimate_ranks(sf.dense(), 1 << 21, 2, head_dim=64, block_size=16)
    assert time.perf_counter() - t0 < 5


def test_bad_input():
    from sparseflash.distributed import sparse_attention as cp_attention

    q = torch.zeros(1, 2, 64, 16)
    with pytest.raises(ValueError, match="not initialised"):
        cp_attention(q, q, q, sf.local(1), block_size=16)


def test_bad_options():
    # the parity options are checked like sparse_attention's; ALiBi needs contiguous shards
    from sparseflash.distributed import sparse_attention as cp_attention

    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'init')}", rank=0, world_size=1)
        try:
            q = torch.zeros(1, 2, 64, 16)
            with pytest.raises(ValueError, match="alibi_slopes"):            # wrong shape
                cp_attention(q, q, q, sf.local(1), block_size=16, alibi_slopes=torch.ones(3))
            with pytest.raises(ValueError, match="alibi_slopes needs sharding='contiguous'"):
                cp_attention(q, q, q, sf.local(1), block_size=16, alibi_slopes=torch.ones(2),
                             sharding="zigzag")
            with pytest.raises(ValueError, match="dropout_p"):
                cp_attention(q, q, q, sf.local(1), block_size=16, dropout_p=1.0)
            with pytest.raises(ValueError, match="softcap"):
                cp_attention(q, q, q, sf.local(1), block_size=16, softcap=-1.0)
            # the scale as sparse_attention checks it (a NaN one passed unchecked before stop 72),
            # its overflow guard with the ranks' norms all-reduced
            for bad in (float("nan"), float("inf"), 3.5e38, "1"):
                with pytest.raises(ValueError, match="scale must be a finite float"):
                    cp_attention(q, q, q, sf.local(1), block_size=16, scale=bad)
            ones = torch.ones(1, 2, 64, 16)
            with pytest.raises(ValueError, match="could overflow the scores"):
                cp_attention(ones, ones, ones, sf.local(1), block_size=16, scale=1e37)
            with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor of shape \(batch, N/W"):
                cp_attention(q, q, q, sf.local(1), block_size=16, key_padding_mask=torch.ones(1, 128, dtype=torch.bool))
            with pytest.raises(ValueError, match="key_padding_mask must be a bool"):
                cp_attention(q, q, q, sf.local(1), block_size=16, key_padding_mask=torch.ones(1, 64))
            with pytest.raises(TypeError, match="key_padding_mask must be a bool torch.Tensor"):
                cp_attention(q, q, q, sf.local(1), block_size=16, key_padding_mask=[[True] * 64])
            # one rank is the one-process call
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(1, 2, 64, 16, generator=g, dtype=torch.float64) for _ in range(3))
            torch.testing.assert_close(cp_attention(q, k, v, sf.local(1), block_size=16, softcap=3.0),
                                       sf.sparse_attention(q, k, v, sf.local(1), block_size=16, softcap=3.0))
            slopes = torch.tensor([0.25, 0.5])
            torch.testing.assert_close(cp_attention(q, k, v, sf.local(1), block_size=16, alibi_slopes=slopes),
                                       sf.sparse_attention(q, k, v, sf.local(1), block_size=16, alibi_slopes=slopes))
            with pytest.raises(ValueError, match="cu_seqlens: across shards every document offset must be a multiple"):
                cp_attention(q, q, q, sf.local(1), block_size=16, cu_seqlens=torch.tensor([0, 20, 64]))
            with pytest.raises(ValueError, match="cu_seqlens must end at the total number of tokens 64"):
                cp_attention(q, q, q, sf.local(1), block_size=16, cu_seqlens=torch.tensor([0, 32]))
            with pytest.raises(ValueError, match="cu_seqlens must be an integer"):
                cp_attention(q, q, q, sf.local(1), block_size=16, cu_seqlens=torch.tensor([0.0, 64.0]))
            with pytest.raises(ValueError, match="cu_seqlens: packed documents need q, k, v of batch 1"):
                q2 = torch.zeros(2, 2, 64, 16)
                cp_attention(q2, q2, q2, sf.local(1), block_size=16, cu_seqlens=torch.tensor([0, 32, 64]))
            kpm = torch.arange(64)[None] % 5 != 2
            torch.testing.assert_close(cp_attention(q, k, v, sf.local(1), block_size=16, key_padding_mask=kpm),
                                       sf.sparse_attention(q, k, v, sf.local(1), block_size=16, key_padding_mask=kpm))
            cu = torch.tensor([0, 16, 64], dtype=torch.int32)
            torch.testing.assert_close(cp_attention(q, k, v, sf.local(1), block_size=16, cu_seqlens=cu),
                                       sf.sparse_attention(q, k, v, sf.local(1), block_size=16, cu_seqlens=cu))
        finally:
            dist.destroy_process_group()


def test_estimate_ranks_before_running():
    # the per-rank plan and estimate, on the host: blocks over the ranks are the whole
    # layout's (documents too), K/V bytes follow the key heads, times are the estimator's
    from sparseflash.attention import resolve_layout
    from sparseflash.distributed import estimate_ranks, shard_plan

    pattern = sf.local(2) | sf.global_blocks(1)
    docs = [0, 1024, 1536, 4096]
    ranks = estimate_ranks(pattern, 4096, 4, head_dim=64, num_heads=4, num_kv_heads=2, block_size=128,
                           causal=True, sharding="zigzag", cu_seqlens=docs, device="h200", dropout_p=0.1)
    whole = resolve_layout(pattern, seq_len=4096, kv_len=4096, num_heads=4, block_size=128, causal=True,
                           cu_seqlens=docs, cu_seqlens_k=docs)
    assert [r.rank for r in ranks] == [0, 1, 2, 3]
    assert sum(r.blocks for r in ranks) == whole.nnz
    for r in ranks:
        plan = shard_plan(pattern, 4096, 4, r.rank, 128, True, 4, None, "zigzag", 2, docs=tuple(docs))
        assert r.key_blocks_received == plan.blocks_received and r.guest_blocks == plan.num_guests
        assert r.kv_bytes_in == 2 * plan.blocks_received * 128 * 2 * 64 * 2
        est = sf.estimate(plan.layout, 64, device="h200", backward=True, dropout_p=0.1)
        assert r.forward_backward_ms == est.predicted_ms and 0 < r.forward_ms < r.forward_backward_ms
    assert any(r.key_blocks_received for r in ranks)
    with pytest.raises(ValueError, match="seq_len must be a positive multiple of 1024"):
        estimate_ranks(pattern, 4096 + 512, 4, head_dim=64, sharding="zigzag")
    with pytest.raises(ValueError, match="cu_seqlens: across shards every document offset"):
        estimate_ranks(pattern, 4096, 4, head_dim=64, cu_seqlens=[0, 100, 4096])
    with pytest.raises(ValueError, match="window_size and alibi need sharding='contiguous'"):
        estimate_ranks(pattern, 4096, 4, head_dim=64, sharding="zigzag", alibi=True)
    with pytest.raises(ValueError, match="world must be a positive int"):
        estimate_ranks(pattern, 4096, 0, head_dim=64)
    with pytest.raises(TypeError, match="pattern must be a sparseflash Pattern"):
        estimate_ranks("local(1)", 4096, 2, head_dim=64)
