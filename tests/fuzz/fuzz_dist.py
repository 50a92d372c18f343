"""Context parallelism on gloo processes with random patterns, shardings, guests, windows, softcap,
ALiBi, GQA and scales; every rank's shard of the output, LSE and gradients against the one-process
result: ``python tests/fuzz/fuzz_dist.py FIRST LAST WORLD [--dropout]``. With ``--dropout`` each case
also runs with dropout (p 0.1 or 0.5) under one torch seed twice and under another: the two
must agree bit for bit, forward and gradients, and the third differ."""
import os, sys, random, tempfile
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests")); sys.path.insert(0, ROOT)
import torch, torch.distributed as dist, torch.multiprocessing as mp
import sparseflash as sf

PATS = [lambda r: sf.local(r.randint(0, 3)), lambda r: sf.dense(), lambda r: sf.butterfly(),
        lambda r: sf.bigbird(window=1, globals=1, random=r.randint(0, 2)),
        lambda r: sf.random(r.randint(1, 3), seed=r.randint(0, 99)),
        lambda r: sf.local(1) | sf.global_blocks(1), lambda r: sf.columns([-1]) | sf.local(0),
        lambda r: sf.rows([0]) | sf.local(1), lambda r: sf.strided(3) | sf.local(0)]

def case(seed, world):
    r = random.Random(seed)
    sharding = r.choice(["contiguous", "zigzag"])
    bs = r.choice([16, 32])
    unit = bs * (2 if sharding == "zigzag" else 1)
    n = unit * r.randint(1, 3)
    c = dict(pattern=r.choice(PATS)(r), causal=r.random() < 0.5, sharding=sharding, bs=bs, N=n * world,
             B=r.choice([1, 2]), Hkv=r.choice([1, 2]), d=r.choice([16, 32]),
             window=None, softcap=0.0, alibi=None, fraction=r.choice([0.5, 1e-9]), scale=r.choice([None, 0.3]))
    c["H"] = c["Hkv"] * r.choice([1, 2])
    if sharding == "contiguous" and r.random() < 0.3:
        c["window"] = (r.choice([-1, 5, 40]), r.choice([-1, 0, 17]))
    if r.random() < 0.3:
        c["softcap"] = r.choice([1.0, 5.0])
    if sharding == "contiguous" and r.random() < 0.3:
        c["alibi"] = r.choice(["h", "bh"])
    return c

def worker(rank, world, init_file, seeds, failures, dropout=False):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    import sparseflash.distributed as sfd
    torch.set_num_threads(1)
    for seed in seeds:
        c = case(seed, world)
        try:
            sfd.GUEST_MIN_FRACTION = c["fraction"]
            sfd.GUEST_COST = None if c["fraction"] < 0.5 else 5 / 4
            sfd.shard_plan.cache_clear()
            g = torch.Generator().manual_seed(seed)
            q, k, v, do = (torch.randn(c["B"], h, c["N"], c["d"], generator=g, dtype=torch.float64) for h in (c["H"], c["Hkv"], c["Hkv"], c["H"]))
            slopes = None
            if c["alibi"]:
                slopes = torch.rand((c["H"],) if c["alibi"] == "h" else (c["B"], c["H"]), generator=g).float()
            dlse = torch.randn(c["B"], c["H"], c["N"], generator=g, dtype=torch.float64)
            q, k, v = (t.requires_grad_(True) for t in (q, k, v))
            kw = dict(block_size=c["bs"], causal=c["causal"], window_size=c["window"], scale=c["scale"], softcap=c["softcap"], alibi_slopes=slopes, backend="torch")
            ref, ref_lse = sf.sparse_attention(q, k, v, c["pattern"], return_lse=True, **kw)
            rg = torch.autograd.grad((ref, ref_lse), (q, k, v), (do, dlse), allow_unused=True)
            sh = lambda t: sfd.shard(t.detach(), world, rank, c["sharding"])
            qs, ks, vs = (sh(t).requires_grad_(True) for t in (q, k, v))
            out, lse = sfd.sparse_attention(qs, ks, vs, c["pattern"], return_lse=True, sharding=c["sharding"], **kw)
            grads = torch.autograd.grad((out, lse), (qs, ks, vs), (sh(do), sh(dlse)))
            bad = []
            for name, a, b in [("out", out, sh(ref)), ("lse", lse, sh(ref_lse))] + list(zip(("dq", "dk", "dv"), grads, rg)):
                if name != "out" and name != "lse":
                    b = sh(b)
                fin = torch.isfinite(b)
                if not torch.equal(fin, torch.isfinite(a)) or (a[fin] - b[fin]).abs().max().item() > 1e-9 if fin.any() else False:
                    bad.append(name)
            if bad:
                failures.put(f"FAIL seed {seed} rank {rank}: {bad} {c}")
            if dropout:
                # dropout: one torch seed gives one output, bit for bit, and gradients; another
                # seed another output (the masks are drawn over each rank's buffer, so there is
                # no one-process oracle for the values)
                drop = random.Random(seed + 10 ** 6).choice([0.1, 0.5])

                def run(s):
                    torch.manual_seed(s)
                    o = sfd.sparse_attention(qs, ks, vs, c["pattern"], sharding=c["sharding"], dropout_p=drop, **kw)
                    return o, torch.autograd.grad(o, (qs, ks, vs), sh(do))
                (o1, g1), (o2, g2), (o3, _) = run(seed), run(seed), run(seed + 1)
                for name, x, y in [("out", o1, o2)] + list(zip(("dq", "dk", "dv"), g1, g2)):
                    if not torch.equal(x, y):
                        diff = (x - y).abs().nan_to_num(float("inf"))
                        failures.put(f"DROPOUT seed {seed} rank {rank}: {name} differs between two calls "
                                     f"(max {diff.max().item():.3g}, {int((diff > 0).sum())} of {x.numel()}, "
                                     f"NaN {int(x.isnan().sum())}/{int(y.isnan().sum())}) p={drop} {c}")
                    elif not torch.isfinite(x).all():
                        failures.put(f"DROPOUT seed {seed} rank {rank}: {name} not finite p={drop} {c}")
                if torch.equal(o1, o3) and o1.abs().max() > 0:
                    failures.put(f"DROPOUT seed {seed} rank {rank}: two seeds gave one output p={drop} {c}")
        except ValueError as e:
            failures.put(f"VALUEERROR seed {seed} rank {rank}: {str(e)[:150]} {c}")
        except Exception as e:
            failures.put(f"EXC seed {seed} rank {rank}: {type(e).__name__}: {str(e)[:300]} {c}")
            dist.destroy_process_group(); return
    dist.destroy_process_group()

if __name__ == "__main__":
    a, b, world = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    dropout = "--dropout" in sys.argv[4:]
    ctx = mp.get_context("spawn")
    failures = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=worker, args=(r, world, os.path.join(tmp, "init"), list(range(a, b)), failures, dropout)) for r in range(world)]
        for p in procs: p.start()
        for p in procs: p.join(600)
    n = 0
    while not failures.empty():
        print(failures.get()); n += 1
    print("done", n, "reports; exit codes", [p.exitcode for p in procs])
