"""run28 timeline probe: where a Hopper forward tile's time goes (stop 43).

Needs ``timeline.patch`` (this folder) applied: it makes every consumer warpgroup of the Hopper
forward store its SM's cycle counter (%clock64) at five points of each tile, with %globaltimer,
the SM id and the tile's steps:

    T0 the tile's start (before its table reads)   T1 Q has landed
    T2 the first S = Q K^T has completed            T3 the last P V has completed
    T4 the output and LSE stores are issued

From them, per tile: ``setup`` T1-T0 (table reads, the wait for Q), ``first`` T2-T1 (the wait
for the first K and its product), ``loop`` T3-T2 (the other steps and the last P V: ``per
step`` divides by the steps), ``epilogue`` T4-T3; per SM the time between tiles (``between``:
for one CTA per tile, a CTA's end to the next CTA's start on the SM) and the ``tail`` (the SM's
last tile end to the kernel's last, in global time). Each is given as a share of the SM time
(SMs x the kernel's span) and as microseconds per tile.

    git apply benchmarks/results/h200-hopper/run28-lpt-dynamic/timeline.patch
    PYTHONPATH=. python benchmarks/results/h200-hopper/run28-lpt-dynamic/timeline_probe.py --out DIR
"""
import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import torch

import sparseflash as sf
from benchmarks.real_batches import launch_switches
from benchmarks.run import Timer
from sparseflash.kernels import launch

PD = dict(HOPPER_PERSISTENT=True, HOPPER_DYNAMIC_TILES=True)
CASES = [  # (name, N, d, causal, settings)
    ("dense causal 4K d=128", 4096, 128, True, {}),
    ("dense causal 4K d=128 pd", 4096, 128, True, PD),
    ("dense 4K d=128", 4096, 128, False, {}),
    ("dense causal 16K d=128", 16384, 128, True, {}),
    ("dense causal 16K d=128 pd", 16384, 128, True, PD),
    ("dense causal 4K d=64 (three, pd)", 4096, 64, True, {}),
    ("dense 16K d=128", 16384, 128, False, {}),
]
MAX_TILES = 160         # tiles a persistent CTA records (the rest fold into the last slot)


def analyse(rec, elapsed_ms):
    """rec: [CTAs, tiles, consumers, 8] int64 (T0..T4 clocks, globaltimer, smid, steps)."""
    C, T, W, _ = rec.shape
    flat = rec.reshape(C * T, W, 8)
    used = flat[:, 0, 1] != 0                      # T1 stamped: a tile ran in this slot
    flat = flat[used]
    t0 = flat[:, :, 0].min(1)
    t1 = flat[:, :, 1].max(1)
    t2 = np.where(flat[:, :, 2] > 0, flat[:, :, 2], flat[:, :, 1]).max(1)
    t3 = flat[:, :, 3].max(1)
    t4 = flat[:, :, 4].max(1)
    g1 = flat[:, 0, 5]
    sm = flat[:, 0, 6]
    steps = flat[:, :, 7].max(1)
    # the clock rate: cycles per ns from T1 and the globaltimer read beside it, per SM
    rates, offsets = {}, {}
    for s in np.unique(sm):
        m = sm == s
        if m.sum() >= 2 and np.ptp(g1[m]) > 0:
            rates[s] = np.polyfit(g1[m].astype(np.float64), t1[m].astype(np.float64), 1)[0]
    rate = float(np.median(list(rates.values()))) if rates else 1.7
    for s in np.unique(sm):
        m = sm == s
        offsets[s] = float(np.median(g1[m] - t1[m] / rate))   # global ns = clock / rate + offset
    to_ns = lambda clk, s: clk / rate + np.array([offsets[x] for x in s])   # noqa: E731
    start_ns, end_ns = to_ns(t0, sm), to_ns(t4, sm)
    span_ns = end_ns.max() - start_ns.min()
    n_sm = len(np.unique(sm))
    parts = {"setup": (t1 - t0), "first": (t2 - t1), "loop": (t3 - t2), "epilogue": (t4 - t3)}
    sm_time = n_sm * span_ns * rate            # cycles of SM time in the span
    out = {"tiles": int(len(t0)), "sms": n_sm, "clock_ghz": round(rate, 3),
           "span_us": round(span_ns / 1e3, 2), "elapsed_ms_event": round(elapsed_ms, 4)}
    for k, v in parts.items():
        out[f"{k}_share"] = round(float(v.sum()) / sm_time, 4)
        out[f"{k}_us_per_tile"] = round(float(v.mean()) / rate / 1e3, 3)
    busy = sum(float(v.sum()) for v in parts.values())
    # per SM: between tiles, and the tail after its last tile
    between = tail = head = 0.0
    for s in np.unique(sm):
        m = np.where(sm == s)[0]
        order = m[np.argsort(start_ns[m])]
        gaps = start_ns[order][1:] - end_ns[order][:-1]
        between += float(np.clip(gaps, 0, None).sum())
        tail += float(end_ns.max() - end_ns[order].max())
        head += float(start_ns[order].min() - start_ns.min())
    out["between_share"] = round(between * rate / sm_time, 4)
    out["tail_share"] = round(tail * rate / sm_time, 4)
    out["head_share"] = round(head * rate / sm_time, 4)
    out["busy_share"] = round(busy / sm_time, 4)
    multi = steps > 1
    out["us_per_step_in_loop"] = round(float(((t3 - t2)[multi] / (steps[multi] - 1)).mean()) / rate / 1e3, 3)
    out["mean_steps"] = round(float(steps.mean()), 2)
    out["between_us_per_tile"] = round(between / len(t0) / 1e3, 3)
    # a tile's fixed part: all but its loop, plus its share of the time between tiles
    out["fixed_us_per_tile"] = round(float(((t1 - t0) + (t2 - t1) + (t4 - t3)).mean()) / rate / 1e3
                                     + between / len(t0) / 1e3, 3)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not hasattr(launch, "HOPPER_FWD_TIMELINE_TILES"):
        ap.error("launch.HOPPER_FWD_TIMELINE_TILES is missing: apply timeline.patch first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    timer = Timer(dev, warmup_ms=100, rep_ms=300, min_reps=10)
    results, raw = [], {}
    for name, N, d, causal, settings in CASES:
        H, B = 2048 // d, 16384 // N
        layout = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(B, N, H, d, device=dev, dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(3))
        with launch_switches(**settings):
            ref = sf.sparse_attention(q, k, v, layout)
            plain_ms = timer(lambda: sf.sparse_attention(q, k, v, layout))[0]
            programs = B * H * ((N + 127) // 128) if not settings else 132
            tiles = 1 if not settings else MAX_TILES
            if d == 64 and not settings:        # three consumers: persistent by default
                programs, tiles = 132, MAX_TILES
            consumers = 3 if d == 64 else 2
            buf = torch.zeros(16 + programs * tiles * consumers * 8, dtype=torch.int64, device=dev)
            with launch_switches(HOPPER_FWD_TIMELINE=buf, HOPPER_FWD_TIMELINE_TILES=tiles):
                o = sf.sparse_attention(q, k, v, layout)             # compile, warm
                same = bool(torch.equal(o, ref))
                stamped_ms = timer(lambda: sf.sparse_attention(q, k, v, layout))[0]
                buf.zero_()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                s.record()
                sf.sparse_attention(q, k, v, layout)
                e.record()
                torch.cuda.synchronize()
                elapsed = s.elapsed_time(e)
        rec = buf[16:].view(programs, tiles, consumers, 8).cpu().numpy()
        raw[name.replace(" ", "_")] = rec
        r = dict(case=name, plain_ms=round(plain_ms, 4), stamped_ms=round(stamped_ms, 4),
                 output_equal=same, **analyse(rec, elapsed))
        results.append(r)
        print(json.dumps(r), flush=True)
        (out / "timeline.json").write_text(json.dumps(results, indent=1))
    np.savez_compressed(out / "raw.npz", **raw)
    keys = ["plain_ms", "stamped_ms", "clock_ghz", "mean_steps", "busy_share", "setup_share", "first_share",
            "loop_share", "epilogue_share", "between_share", "tail_share", "head_share",
            "setup_us_per_tile", "first_us_per_tile", "epilogue_us_per_tile", "between_us_per_tile",
            "us_per_step_in_loop", "fixed_us_per_tile"]
    lines = ["metric".ljust(26) + "".join(r["case"][:30].rjust(32) for r in results)]
    for key in keys:
        lines.append(key.ljust(26) + "".join(str(r[key]).rjust(32) for r in results))
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
