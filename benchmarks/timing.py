"""Interleaved timing of several impls of one case, shared by ``parity.py``, ``hopper.py``,
``real_batches.py`` and ``run.py``.

The GPU's clock drifts over a run: it runs fastest for the first seconds of load and slows as it
warms (run22 call 4: the same forward took 1.559 ms timed first and 1.792 ms timed last, see
docs/hopper.md "The walk over a row (run22)"). An impl timed first, right after the others
compiled while the GPU idled, gets those fast seconds alone, and every ratio against it is
biased. :func:`interleaved` therefore

1. runs every job's last call in turn for ``heat_s`` seconds (which also compiles them), then
2. times every call of every job in ``rounds`` rounds, every other round in reverse order,

and reports each call's round times, whose mean cancels a drift linear in time.
"""
from __future__ import annotations

import contextlib
import time

import torch

ROUNDS = 2          # the scripts' --rounds
HEAT_S = 6.0        # the scripts' --heat


def interleaved(timer, dev, jobs, rounds: int = ROUNDS, heat_s: float = HEAT_S, peak=None) -> dict:
    """Times ``jobs``, a list of ``(name, calls, setup)``: ``calls`` a tuple of zero-argument
    callables (a job's forward, forward+backward, ...: every one timed in every round, the last
    one also run by the heat phase), ``setup`` a zero-argument function returning a context
    manager held around every call of the job (its settings; ``contextlib.nullcontext`` for
    none). ``timer(fn)`` returns ``(ms, reps)``; ``peak(fn, dev)``, when given, measures a call's
    peak memory once, in the first round.

    Returns ``{name: (times, peaks)}``: ``times[i]`` the list of call ``i``'s times, one a round
    in the order run; ``peaks[i]`` its peak (None without ``peak``)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    names = [name for name, _, _ in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"jobs must have distinct names, got {names}")
    cuda = torch.device(dev).type == "cuda"
    t_end = time.perf_counter() + max(heat_s, 0.0)
    while time.perf_counter() < t_end:
        for _, calls, setup in jobs:
            with setup():
                calls[-1]()
        if cuda:
            torch.cuda.synchronize(dev)
    out = {name: ([[] for _ in calls], [None] * len(calls)) for name, calls, _ in jobs}
    for r in range(rounds):
        for name, calls, setup in (jobs if r % 2 == 0 else jobs[::-1]):
            times, peaks = out[name]
            with setup():
                for i, call in enumerate(calls):
                    times[i].append(timer(call)[0])
                if r == 0 and peak is not None:
                    peaks[:] = [peak(call, dev) for call in calls]
    return out


def passes(fn, q, k, v, do, hold=contextlib.nullcontext):
    """An impl's two timed calls: the forward ``fn(q, k, v)``, and the forward on fresh leaves
    of q, k, v followed by their gradients against ``do``; each inside ``hold()`` (the impl's
    settings, which the backward reads when autograd runs it)."""
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

    def fwd():
        with hold():
            return fn(q, k, v)

    def step():
        with hold():
            return torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)
    return fwd, step


def gpu_heat(dev, seconds: float) -> float:
    """The heat phase's length on ``dev``: ``seconds`` on a GPU, 0 elsewhere (the drift it
    absorbs is the GPU clock's)."""
    return seconds if torch.device(dev).type == "cuda" else 0.0


def mean(xs) -> float:
    return sum(xs) / len(xs)


def rounds_note(times) -> str:
    """The note a row gets: how its time was taken and the round times."""
    return f"mean of {len(times)} interleaved rounds: " + ", ".join(f"{x:.4f}" for x in times)


__all__ = ["HEAT_S", "ROUNDS", "gpu_heat", "interleaved", "mean", "passes", "rounds_note"]
