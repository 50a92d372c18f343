"""One small forward + backward of the Hopper kernels (forced on) for compute-sanitizer.

    compute-sanitizer --tool memcheck  python benchmarks/sanitize.py
    compute-sanitizer --tool racecheck python benchmarks/sanitize.py

Cases: a causal ``local(2) | global_blocks(1)`` at N=1000 (a partial last block), d=128,
and GQA 4/2 at d=64 with key padding that crosses a block; bf16. Prints the largest
difference from the float64 oracle so a run that the tool slows down still checks values.

``--dropout``: the same cases with ``dropout_p=0.2`` (the oracle is the torch backend on the
same seed, which drops the same entries).

``--persistent N``: the persistent forward with at most N CTAs (``launch.HOPPER_PERSISTENT``),
so that each CTA walks several query tiles.

``--dynamic``: with ``--persistent``, the tiles handed out at run time
(``launch.HOPPER_DYNAMIC_TILES``).

``--overlap``: the forward's softmax in a block of its own at every head dim
(``launch.HOPPER_FWD_OVERLAP = True``; by default only at d=128).

``--consumers 3``: the three-consumer forward (192-query tiles, ``launch.HOPPER_FWD_CONSUMERS``)
on the tables it takes: dense causal at N=1000 and dense at N=700, GQA 4/2, d=64.

``--softcap C``: the same cases with ``softcap=C`` (the dK/dV kernel then runs its full and masked
steps as two loops by default: ``launch.HOPPER_BWD_SPLIT_LOOPS``).

``--split 0|1``: the dK/dV kernel's two loops off or on whatever the options
(``launch.HOPPER_BWD_SPLIT_LOOPS = False / True``).

``--stats MODE``: how the dK/dV kernel gets its statistics (``launch.HOPPER_BWD_STATS``:
``tma``, ``cpasync`` or ``load``; default: the dispatcher's choice, TMA on these aligned
shapes).
"""
import sys

import torch

import sparseflash as sf
from sparseflash.kernels import launch


def run_case(H, Hkv, N, d, pattern, causal, kpm=False, dropout_p=0.0, softcap=0.0):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    k = torch.randn(1, Hkv, N, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    v = torch.randn(1, Hkv, N, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    kw = {}
    if kpm:
        mask = torch.ones(1, N, dtype=torch.bool, device="cuda")
        mask[0, N // 2 - 70: N // 2 + 70] = False
        kw["key_padding_mask"] = mask
    torch.manual_seed(5)
    out = sf.sparse_attention(q, k, v, pattern, block_size=128, causal=causal, dropout_p=dropout_p,
                              softcap=softcap, **kw)
    out.float().square().sum().backward()
    torch.manual_seed(5)
    ref = sf.sparse_attention(*(t.detach().double().cpu().requires_grad_() for t in (q, k, v)), pattern,
                              block_size=128, causal=causal, dropout_p=dropout_p, softcap=softcap,
                              **{n: t.cpu() for n, t in kw.items()})
    err = (out.detach().double().cpu() - ref).abs().max().item()
    torch.cuda.synchronize()
    print(f"H={H}/{Hkv} N={N} d={d} {pattern} dropout {dropout_p} softcap {softcap}: max |out - oracle| = {err:.3e}, "
          f"grads finite: {all(t.grad.isfinite().all().item() for t in (q, k, v))}", flush=True)


def main():
    launch.USE_HOPPER = launch.USE_HOPPER_BWD = True
    p = 0.2 if "--dropout" in sys.argv else 0.0
    if "--persistent" in sys.argv:
        launch.HOPPER_PERSISTENT = int(sys.argv[sys.argv.index("--persistent") + 1])
    if "--dynamic" in sys.argv:
        launch.HOPPER_DYNAMIC_TILES = True
    if "--overlap" in sys.argv:
        launch.HOPPER_FWD_OVERLAP = True
    c = float(sys.argv[sys.argv.index("--softcap") + 1]) if "--softcap" in sys.argv else 0.0
    if "--split" in sys.argv:
        launch.HOPPER_BWD_SPLIT_LOOPS = {"0": False, "1": True}[sys.argv[sys.argv.index("--split") + 1]]
    if "--stats" in sys.argv:
        launch.HOPPER_BWD_STATS = sys.argv[sys.argv.index("--stats") + 1]
    if "--consumers" in sys.argv:
        launch.HOPPER_FWD_CONSUMERS = int(sys.argv[sys.argv.index("--consumers") + 1])
        run_case(4, 2, 1000, 64, sf.dense(), True, dropout_p=p, softcap=c)
        run_case(4, 2, 700, 64, sf.dense(), False, dropout_p=p, softcap=c)
        return
    run_case(2, 2, 1000, 128, sf.local(2) | sf.global_blocks(1), True, dropout_p=p, softcap=c)
    run_case(4, 2, 1024, 64, sf.local(1) | sf.global_blocks(1), False, kpm=True, dropout_p=p, softcap=c)


if __name__ == "__main__":
    main()
