"""Probe: are the short forward+backward cases host-bound? (run20)

For each case and impl (ours; FA4 where ``flash_attn.cute`` imports; cuDNN on dense cases) it
prints, forward and forward+backward:

* ``timer ms``: the median of ``benchmarks/run.py``'s ``Timer`` (L2 flushed, CUDA events
  around each call), as ``benchmarks/hopper.py`` times;
* ``ahead ms``: the same, but with a GPU sleep (``torch.cuda._sleep``, ~2 ms) queued between
  the flush and the start event, so that the host has queued the whole call before the GPU
  reaches it: the GPU's time alone;
* ``host us``: host time per call, 30 calls queued without a sync.

Where ``timer`` exceeds ``ahead`` and ``host us`` exceeds ``ahead``, the harness timed the
host, not the kernels. It also writes a cProfile of ours (forward+backward) per case.

Since stop 50, two checks of whether a call waits for the GPU (run20 measured 113 µs of host
time for our local(2) 16K forward but 841 µs for forward+backward, about the GPU's 868 µs:
either a slow backward host path or a synchronisation):

* ``behind us``: host time per call with ~50 ms of GPU sleep queued ahead. A call that never
  waits for the GPU returns long before the sleep ends; one that synchronises takes the sleep;
* ``syncs``: the first torch operation that synchronises, under
  ``torch.cuda.set_sync_debug_mode("error")`` (torch's own synchronising operations only).

``--only-ours`` leaves out FA4 and cuDNN.

``--split`` (stop 51) times where our forward+backward's host time goes instead (since stop
52 first the host time of an empty autograd Function's forward and ``torch.autograd.grad``
on the same tensors: torch's floor). run33
(`benchmarks/results/h200-hopper/run33-stop51`, H100) found no synchronisation (``syncs``
none, ``behind us`` 1107-1387 µs for forward+backward against 120-193 µs forward): the
backward's host path itself takes about 1 ms, more than the GPU's 0.6 ms for local(2) 16K.
The split wraps each stage with a clock (its own cost is a few hundred ns a call) and prints,
per call, with ~50 ms of GPU sleep queued ahead (so no launch waits on a full queue): the whole
step; ``sparse_attention`` (the forward, with the autograd Function); the forward's
implementation, its launcher and its kernel launches; ``torch.autograd.grad``; the backward's
implementation, its launcher and its launches (count and µs). ``grad`` minus the backward
implementation is autograd's own time; the launcher minus its launches is our Python.

    PYTHONPATH=. python benchmarks/host_bound_probe.py --out DIR [--only-ours] [--split]
"""
import argparse
import collections
import cProfile
import contextlib
import io
import json
import pstats
import statistics
import time
import traceback
from pathlib import Path

import torch

import sparseflash as sf
from sparseflash.layout import BlockLayout
from benchmarks.hopper import cudnn_fn, fa4_fn, fa4_function, ours_fn
from benchmarks.host_overhead_probe import host_us
from benchmarks.run import Timer

CASES = [  # name, pattern (None: dense), N, d, causal
    ("local(2) N=16384 d=128", sf.local(2), 16384, 128, False),
    ("butterfly N=16384 d=128", sf.butterfly(), 16384, 128, False),
    ("strided(16)|local(1) N=16384 d=128", sf.strided(16) | sf.local(1), 16384, 128, False),
    ("local(8) N=16384 d=64", sf.local(8), 16384, 64, False),
    ("local(2) N=65536 d=128", sf.local(2), 65536, 128, False),
    ("dense causal N=4096 d=128", None, 4096, 128, True),
    ("dense causal N=4096 d=64", None, 4096, 64, True),
]


def case_layout(pattern, N, d, causal):
    """A case's layout (blocks of 128, 2048 // d heads) and batch (1 for a pattern; dense: 16K
    tokens in all)."""
    B = 1 if pattern is not None else max(1, 16384 // N)
    return sf.compile(pattern or sf.dense(), N, block_size=128, causal=causal, num_heads=2048 // d), B


def case_inputs(pattern, N, d, causal, dev):
    """:func:`case_layout`, and bf16 q, k, v, dO in (B, H, N, d) views of (B, N, H, d) tensors."""
    layout, B = case_layout(pattern, N, d, causal)
    H = layout.num_heads
    g = torch.Generator(device=dev).manual_seed(0)
    return layout, B, tuple(torch.randn(B, N, H, d, device=dev, dtype=torch.bfloat16, generator=g).transpose(1, 2)
                            for _ in range(4))


def ahead_ms(timer, fn, n_rep=60, sleep_cycles=4_000_000):
    for _ in range(5):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    for s, e in zip(starts, ends):
        timer._flush.zero_()
        torch.cuda._sleep(sleep_cycles)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()     # the next sleep starts with an empty queue
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def behind_us(fn, n=10, sleep_cycles=100_000_000):
    """Host µs a call with about 50 ms of GPU sleep queued ahead (see the module docstring)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(sleep_cycles)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    elapsed = time.perf_counter() - t0
    torch.cuda.synchronize()
    return elapsed / n * 1e6


def first_sync(fn):
    """The tail of the traceback of ``fn``'s first synchronising torch operation, or None."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    except RuntimeError as exc:
        return "".join(traceback.format_exception(exc))[-1500:]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return None


class StageClock:
    """Host nanoseconds and calls per stage: ``wrap`` replaces an attribute (a module's
    function or a class's method, looked up at call time by its callers) with a timed one;
    launches count under the phase (forward/backward) of the launcher they run in."""

    def __init__(self):
        self.ns = collections.Counter()
        self.calls = collections.Counter()
        self.phase = "other"
        self._undo = []

    def wrap(self, owner, name: str, label: str, phase: str = None, by_phase: bool = False):
        """``phase``: the phase the wrapped call's callees count in; ``by_phase``: count this
        stage under the caller's phase (``"launch forward"``)."""
        orig = getattr(owner, name)

        def timed(*args, **kwargs):
            key = f"{label} {self.phase}" if by_phase else label
            before = self.phase
            if phase is not None:
                self.phase = phase
            t0 = time.perf_counter_ns()
            try:
                return orig(*args, **kwargs)
            finally:
                self.ns[key] += time.perf_counter_ns() - t0
                self.calls[key] += 1
                self.phase = before
        setattr(owner, name, timed)
        self._undo.append((owner, name, orig))

    def restore(self):
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)
        self._undo.clear()

    def reset(self):
        self.ns.clear()
        self.calls.clear()


SPLIT_STAGES = ("step", "sparse_attention", "forward impl", "attention_forward", "launch forward",
                "grad", "backward impl", "attention_backward", "launch backward",
                # finer, since stop 52: the layout's device tables, plan builds (a call each
                # step means the plan cache missed), descriptor copies and TMA fills, CUDA
                # allocations
                "layout.to", "_fwd_plan", "_hopper_fwd_plan", "_bwd_plan", "_fast_descriptors",
                "_stat_rows", "_bwd_workspace", "tma fill forward", "tma fill backward",
                "torch.empty forward", "torch.empty backward", "torch.zeros forward",
                "torch.zeros backward")


def split_host(step, n=10, sleep_cycles=100_000_000, rounds=1):
    """Per-call host µs (and calls) of each stage of ``step`` (a forward+backward of ours),
    with GPU sleep queued ahead when on CUDA: ``rounds`` rounds of ``n`` calls, each round
    behind its own sleep; a stage's µs is the median over the rounds of its per-call mean
    (run34's host varied by up to 30% between single rounds). Returns {stage: (us, calls)}."""
    import sparseflash.attention as sfa
    from sparseflash.kernels import launch

    clock = StageClock()
    clock.wrap(sf, "sparse_attention", "sparse_attention")
    clock.wrap(sfa, "_forward_impl", "forward impl")
    clock.wrap(launch, "attention_forward", "attention_forward", phase="forward")
    clock.wrap(torch.autograd, "grad", "grad")
    clock.wrap(sfa, "_backward_impl", "backward impl")
    clock.wrap(launch, "attention_backward", "attention_backward", phase="backward")
    clock.wrap(launch._Launch, "__call__", "launch", by_phase=True)
    clock.wrap(BlockLayout, "to", "layout.to")
    for name in ("_fwd_plan", "_hopper_fwd_plan", "_bwd_plan", "_fast_descriptors",
                 "_stat_rows", "_bwd_workspace"):
        if hasattr(launch, name):        # (a stage the tree has: see the patches staged)
            clock.wrap(launch, name, name)
    clock.wrap(torch, "empty", "torch.empty", by_phase=True)
    clock.wrap(torch, "zeros", "torch.zeros", by_phase=True)
    try:   # Triton's launcher fills each TMA descriptor argument through this module function
        from triton.backends.nvidia import driver as nvidia_driver
        clock.wrap(nvidia_driver, "make_tensordesc_arg", "tma fill", by_phase=True)
    except ImportError:
        pass
    rounds_us = collections.defaultdict(list)
    calls = collections.Counter()
    try:
        step()
        cuda = torch.cuda.is_available()
        for _ in range(rounds):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda._sleep(sleep_cycles)
            clock.reset()
            for _ in range(n):
                t0 = time.perf_counter_ns()
                step()
                clock.ns["step"] += time.perf_counter_ns() - t0
                clock.calls["step"] += 1
            for k in SPLIT_STAGES:
                rounds_us[k].append(clock.ns[k] / n / 1e3)
            calls.update(clock.calls)
        if cuda:
            torch.cuda.synchronize()
    finally:
        clock.restore()
    return {k: (statistics.median(rounds_us[k]), calls[k] / n / rounds) for k in SPLIT_STAGES}


class _Floor(torch.autograd.Function):
    """A stand-in for our autograd Function with no work inside: the forward returns an empty
    output and LSE, the backward three empty gradients (one CUDA allocation each, as ours)."""

    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return torch.empty_like(q), torch.empty(q.shape[:3], device=q.device)

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def floor_us(q, k, v, do, n=10, rounds=9, sleep_cycles=100_000_000):
    """Host µs a call of the empty Function above, forward and ``torch.autograd.grad`` on the
    same tensors, behind GPU sleep, median of ``rounds`` means of ``n`` (:func:`split_host`'s
    "step"): the part of a step's host time that torch takes whatever the Function does
    (since stop 52)."""
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

    def step():
        out, _ = _Floor.apply(qg, kg, vg)
        return torch.autograd.grad(out, (qg, kg, vg), do)
    return split_host(step, n=n, sleep_cycles=sleep_cycles, rounds=rounds)["step"][0]


def main_split(out: Path):
    dev = torch.device("cuda")
    rows = []
    layout, B, (q, k, v, do) = case_inputs(*CASES[0][1:], dev)
    floor = floor_us(q, k, v, do)
    print(f"an empty autograd Function, forward + torch.autograd.grad: {floor:.1f} us", flush=True)
    for name, pattern, N, d, causal in CASES:
        layout, B, (q, k, v, do) = case_inputs(pattern, N, d, causal, dev)
        fn = ours_fn(layout, False)
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

        def step():
            with fn.switches():
                return torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)
        split = split_host(step, rounds=9)
        rows.append(dict(case=name, **{s: dict(us=us, calls=c) for s, (us, c) in split.items()}))
        print(name + "".join(f"\n  {s:<22}{us:>9.1f} us x{c:g}" for s, (us, c) in split.items() if c),
              flush=True)
    (out / "host_split.json").write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__,
         "empty_function_step_us": floor, "rows": rows}, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only-ours", action="store_true", help="leave out FA4 and cuDNN")
    ap.add_argument("--split", action="store_true",
                    help="where our forward+backward's host time goes (the stages above), only")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.split:
        return main_split(out)
    dev = torch.device("cuda")
    timer = Timer(dev, warmup_ms=100, rep_ms=400, min_reps=10)   # as hopper.py (start_run)
    fa4 = None if args.only_ours else fa4_function()
    rows = []
    print(f"{'case':<36}{'impl':<8}{'pass':<9}{'timer ms':>10}{'ahead ms':>10}{'host us':>9}"
          f"{'behind us':>10}  syncs", flush=True)
    for name, pattern, N, d, causal in CASES:
        layout, B, (q, k, v, do) = case_inputs(pattern, N, d, causal, dev)
        impls = {"ours": ours_fn(layout, False)}
        if pattern is None and not args.only_ours:
            impls["cudnn"] = cudnn_fn(causal)
        if fa4 is not None:
            impls["fa4"] = fa4_fn(fa4, None if pattern is None else layout, B, causal)
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
        for impl, fn in impls.items():
            def fwd(fn=fn):
                return fn(q, k, v)

            def step(fn=fn):
                with getattr(fn, "switches", contextlib.nullcontext)():
                    return torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)
            for p, f in (("fwd", fwd), ("fwd+bwd", step)):
                row = dict(case=name, impl=impl, pass_=p, timer_ms=timer(f)[0], ahead_ms=ahead_ms(timer, f),
                           host_us=host_us(f, n=30), behind_us=behind_us(f),
                           syncs=first_sync(f) if impl == "ours" else None)
                rows.append(row)
                sync = "none" if row["syncs"] is None else row["syncs"].strip().splitlines()[-1][:80]
                print(f"{name:<36}{impl:<8}{p:<9}{row['timer_ms']:>10.3f}{row['ahead_ms']:>10.3f}"
                      f"{row['host_us']:>9.0f}{row['behind_us']:>10.0f}  {sync}", flush=True)
            if impl == "ours":
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(20):
                    step()
                prof.disable()
                torch.cuda.synchronize()
                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
                (out / f"profile_{name.split()[0]}_{N}_{d}.txt").write_text(s.getvalue())
        (out / "host_bound.json").write_text(json.dumps(
            {"gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
