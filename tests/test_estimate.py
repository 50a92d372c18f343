"""The IO-cost estimator: FLOP formula, proportionality to density, baselines, devices, printing."""
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.estimate import DEVICES, DeviceProfile, estimate, get_device, register_device


# The h100 profile as the portable kernels see it (their fields, for every call): the plain
# cost model the mechanics tests below work out by hand (no tile time, no exponential limit,
# a separate dQ kernel)
PLAIN = DEVICES["h100"].for_call(64, 64, torch.float32)


def random_layout(nq, nk, density, *, block_size=64, num_heads=1, seed=0, causal=False,
                  seq_len=None, kv_len=None):
    rng = np.random.default_rng(seed)
    mask = rng.random((nq, nk)) < density
    seq_len = seq_len or nq * block_size
    kv_len = kv_len or nk * block_size
    return sf.compile(sf.from_mask(mask), seq_len, kv_len=kv_len, block_size=block_size,
                      causal=causal, num_heads=num_heads)


def elt(dtype):
    return torch.empty((), dtype=dtype).element_size()


@pytest.mark.parametrize("block_size,heads,batch,d,dtype", [
    (64, 1, 1, 64, torch.bfloat16),
    (128, 4, 2, 128, torch.float16),
    (32, 3, 5, 80, torch.float32),
], ids=["b64-H1-B1-d64-bf16", "b128-H4-B2-d128-fp16", "b32-H3-B5-d80-fp32"])
def test_flops_formula_and_backward_factor(block_size, heads, batch, d, dtype):
    layout = random_layout(13, 9, 0.4, block_size=block_size, num_heads=heads, seed=1)
    fwd = estimate(layout, d, batch=batch, dtype=dtype)
    assert fwd.nnz == layout.nnz
    assert fwd.density == layout.density
    assert fwd.flops == 4 * d * block_size ** 2 * layout.nnz * batch
    both = estimate(layout, d, batch=batch, dtype=dtype, backward=True)
    assert both.flops == pytest.approx(3.5 * fwd.flops)
    assert both.hbm_bytes > fwd.hbm_bytes and both.predicted_ms > fwd.predicted_ms


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_flops_and_bytes_scale_with_density(backward):
    # Same grid and lengths, growing nnz: FLOPs are proportional to nnz, and bytes are
    # affine in nnz with a slope of the per-block tile traffic.
    b, d, batch, e = 64, 64, 2, elt(torch.bfloat16)
    layouts = [random_layout(24, 24, p, block_size=b, seed=3) for p in (0.05, 0.2, 0.5, 0.9)]
    ests = [estimate(L, d, batch=batch, backward=backward) for L in layouts]
    nnz = np.array([L.nnz for L in layouts], dtype=float)
    flops = np.array([x.flops for x in ests])
    hbm = np.array([x.hbm_bytes for x in ests])
    np.testing.assert_allclose(flops / nnz, flops[0] / nnz[0])
    # forward per block: K and V tiles + one int32 index
    slope = 2 * b * d * e + 4
    if backward:
        # dkdv: Q, dO tiles + LSE, delta rows; dq: K, V tiles; each kernel reads the index too
        slope += (2 * b * d * e + 2 * b * 4 + 4) + (2 * b * d * e + 4)
    np.testing.assert_allclose(np.diff(hbm) / np.diff(nnz), batch * slope)
    # the variable part (bytes minus the nnz-independent part) is proportional to density
    fixed = hbm[0] - nnz[0] * batch * slope
    variable = hbm - fixed
    dens = np.array([L.density for L in layouts])
    np.testing.assert_allclose(variable / dens, variable[0] / dens[0])
    assert np.all(np.diff([x.predicted_ms for x in ests]) > 0)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_linear_in_batch_and_sums_of_kernels(backward):
    layout = random_layout(10, 14, 0.3, block_size=32, num_heads=2, causal=True, seed=5,
                           seq_len=300, kv_len=440)
    one = estimate(layout, 96, backward=backward)
    four = estimate(layout, 96, batch=4, backward=backward)
    for a, b in ((one.sparse, four.sparse), (one.dense, four.dense), (one.standard, four.standard)):
        assert b.flops == 4 * a.flops and b.hbm_bytes == 4 * a.hbm_bytes
        assert b.workspace_bytes == 4 * a.workspace_bytes
        assert a.flops == sum(k.flops for k in a.kernels)
        assert a.predicted_ms == pytest.approx(sum(k.ms for k in a.kernels))
    names = [k.name for k in one.sparse.kernels]
    assert names == (["attn_fwd", "attn_bwd_dq", "attn_bwd_dkdv"]
                     if backward else ["attn_fwd"])


def test_forward_bytes_written_out():
    # Q read + O write + LSE write once per row; K and V tile per computed block; tables.
    b, d, h, batch = 32, 48, 2, 3
    n, nk = 7 * b - 5, 5 * b - 5  # not multiples of the block; aligned at the end, so 7 x 5 blocks
    layout = random_layout(7, 5, 0.5, block_size=b, num_heads=h, seq_len=n, kv_len=nk, seed=4)
    for dtype in (torch.bfloat16, torch.float32):
        e = elt(dtype)
        want = batch * (h * n * d * e * 2 + h * n * 4 + layout.nnz * 2 * b * d * e
                        + (2 * h * layout.num_q_blocks + layout.nnz) * 4)
        assert estimate(layout, d, batch=batch, dtype=dtype).hbm_bytes == want


def test_dense_flash_equals_ours_on_dense_layout_and_ignores_pattern():
    dense = sf.compile(sf.dense(), 1024, block_size=64, num_heads=2)
    est = estimate(dense, 64)
    assert est.dense_nnz == dense.nnz
    assert est.dense_flops == est.flops and est.dense_hbm_bytes == est.hbm_bytes
    assert est.speedup_vs_dense == pytest.approx(1.0)
    sparse = sf.compile(sf.local(1), 1024, block_size=64, num_heads=2)
    sparse_est = estimate(sparse, 64)
    assert sparse_est.dense_flops == est.dense_flops
    assert sparse_est.dense_hbm_bytes == est.dense_hbm_bytes
    assert sparse_est.speedup_vs_dense > 1.0


@pytest.mark.parametrize("seq_len,kv_len", [(1000, 1000), (700, 1300), (1300, 1300), (512, 960)],
                         ids=["square", "kv-longer", "square-odd", "kv-longer-aligned"])
def test_dense_flash_skips_the_causal_triangle(seq_len, kv_len):
    causal = sf.compile(sf.dense(), seq_len, kv_len=kv_len, block_size=64, causal=True,
                        num_heads=3)
    est = estimate(causal, 64)
    # the compiler drops blocks wholly above the causal line; a dense causal layout is the truth
    assert est.dense_nnz == causal.nnz == int(causal.to_dense().sum())
    assert est.dense_flops == est.flops
    local = sf.compile(sf.local(1), seq_len, kv_len=kv_len, block_size=64, causal=True, num_heads=3)
    assert estimate(local, 64).dense_nnz == causal.nnz


@pytest.mark.parametrize("causal,heads", [(True, 1), (False, 1), (True, 3)])
def test_header_counts_agree_with_density(causal, heads):
    # "X of Y ... blocks computed (density Z)" used to put the causal triangle in Y: for a
    # dense causal layout it read "528 of 528 dense blocks computed (density 51.56%)"
    layout = sf.compile(sf.dense(), 4096, causal=causal, num_heads=heads)
    est = estimate(layout, 64)
    line = est.to_string().splitlines()[1]
    m = re.search(r"([\d,]+) of ([\d,]+) blocks computed \(density ([\d.]+)%\)", line)
    assert m, line
    x, y = (int(g.replace(",", "")) for g in m.groups()[:2])
    assert (x, y) == (layout.nnz, heads * layout.num_q_blocks * layout.num_kv_blocks)
    assert float(m.group(3)) == pytest.approx(100 * x / y, abs=0.005)
    assert float(m.group(3)) == pytest.approx(100 * layout.density, abs=0.005)
    assert est.grid_blocks == y
    # the triangle dense FlashAttention computes is still reported, and named
    assert (f"dense FlashAttention computes {est.dense_nnz:,} (causal triangle)" in line) == causal


def test_standard_attention_counts_the_scores():
    b, d, h, batch = 64, 32, 2, 2
    n, nk = 640, 896
    for dtype in (torch.bfloat16, torch.float32):
        e = elt(dtype)
        dense = sf.compile(sf.dense(), n, kv_len=nk, block_size=b, num_heads=h)
        est = estimate(dense, d, batch=batch, dtype=dtype)
        bh = batch * h
        # FlashAttention paper, Algorithm 0: read Q, K; write S; read S, write P; read P, V; write O
        want = bh * e * (2 * n * d + 2 * nk * d + 4 * n * nk)
        assert est.standard_hbm_bytes == want
        assert est.standard_flops == bh * 4 * n * nk * d
        # a sparse layout needs a masking pass: read S and a bool mask, write S
        sparse = sf.compile(sf.local(1), n, kv_len=nk, block_size=b, num_heads=h)
        est_s = estimate(sparse, d, batch=batch, dtype=dtype)
        assert est_s.standard_hbm_bytes == want + bh * (2 * n * nk * e + n * nk)
        # scores are quadratic: standard bytes exceed ours by far on a sparse layout
        assert est_s.standard_hbm_bytes > 3 * est_s.hbm_bytes
        both = estimate(dense, d, batch=batch, dtype=dtype, backward=True)
        assert both.standard_flops == 3 * est.standard_flops   # 4 backward matmuls, no recompute
        assert both.standard.workspace_bytes == 2 * est.standard.workspace_bytes == bh * 4 * n * nk * e


def test_standard_bytes_quadratic_ours_linear_in_length():
    # local(1): nnz ~ 3 nq, so our bytes grow ~linearly with N; standard grows ~N^2.
    small = estimate(sf.compile(sf.local(1), 4096, block_size=64), 64)
    large = estimate(sf.compile(sf.local(1), 4 * 4096, block_size=64), 64)
    assert large.hbm_bytes / small.hbm_bytes == pytest.approx(4, rel=0.02)
    assert large.standard_hbm_bytes / small.standard_hbm_bytes == pytest.approx(16, rel=0.02)


def test_roofline_compute_bound_time():
    layout = sf.compile(sf.dense(), 16384, num_heads=16)
    p = PLAIN
    est = estimate(layout, 128, device=p)
    (kernel,) = est.sparse.kernels
    assert kernel.bound == "compute"
    want = est.flops / (p.peak_bf16_tflops * 1e12 * p.attn_fwd_efficiency) * 1e3 \
        + p.launch_overhead_us / 1e3
    assert est.predicted_ms == pytest.approx(want)


def test_roofline_memory_bound_time():
    # d=16 and one block per row: tiny compute per byte
    layout = sf.compile(sf.local(0), 1 << 16, block_size=16, num_heads=4)
    p = DEVICES["h100"]
    est = estimate(layout, 16)
    (kernel,) = est.sparse.kernels
    assert kernel.bound == "memory"
    tiles = layout.nnz * 2 * 16 * 16 * 2
    want = (est.hbm_bytes - tiles * p.tile_l2_hit_rate) / (p.hbm_gbps * 1e9 * p.bandwidth_efficiency) * 1e3 \
        + p.launch_overhead_us / 1e3
    assert est.predicted_ms == pytest.approx(want)


def test_device_override_and_registration():
    layout = sf.compile(sf.local(2), 16384, num_heads=8)
    base = estimate(layout, 128, device=PLAIN)
    fast = PLAIN.replace(name="2x H100", peak_bf16_tflops=2 * 989.4, hbm_gbps=2 * 3350.0,
                                   launch_overhead_us=0.0)
    est = estimate(layout, 128, device=fast)
    assert est.flops == base.flops and est.hbm_bytes == base.hbm_bytes
    overhead = DEVICES["h100"].launch_overhead_us / 1e3
    assert est.predicted_ms == pytest.approx((base.predicted_ms - overhead) / 2)
    assert est.device is fast
    register_device("test-gpu", fast)
    try:
        assert estimate(layout, 128, device="TEST-GPU").predicted_ms == est.predicted_ms
    finally:
        del DEVICES["test-gpu"]
    # h200: same compute, more bandwidth -> never slower than h100 with h200's calibration
    fitted = ("attn_fwd_efficiency", "attn_bwd_efficiency", "attn_bwd_efficiency_d64", "attn_exp_per_ns",
              "attn_tile_overhead_us")
    h100_fitted = DEVICES["h100"].replace(**{f: getattr(DEVICES["h200"], f) for f in fitted})
    assert (estimate(layout, 128, device="h200").predicted_ms
            <= estimate(layout, 128, device=h100_fitted).predicted_ms)
    assert estimate(layout, 128, device="a100").predicted_ms > base.predicted_ms
    with pytest.raises(ValueError, match="device"):
        estimate(layout, 128, device="tpu")
    with pytest.raises(TypeError):
        register_device("x", {"name": "x"})


def test_calibration_fields_are_named_and_used():
    layout = sf.compile(sf.dense(), 8192, num_heads=8)
    fields = {f.name for f in dataclasses.fields(DeviceProfile)}
    assert {"attn_fwd_efficiency", "attn_bwd_efficiency", "matmul_efficiency",
            "bandwidth_efficiency", "launch_overhead_us"} <= fields
    base = estimate(layout, 128, backward=True)
    better = estimate(layout, 128, backward=True,
                      device=DEVICES["h100"].replace(attn_bwd_efficiency=0.88))
    assert better.predicted_ms < base.predicted_ms
    assert better.sparse.kernels[0].ms == base.sparse.kernels[0].ms   # forward untouched


def test_backward_efficiency_by_head_dim():
    """``attn_bwd_efficiency_d64`` prices the backward at head dims up to 64 only; None falls
    back to ``attn_bwd_efficiency``; the forward never reads it."""
    layout = sf.compile(sf.dense(), 8192, num_heads=8)
    plain = PLAIN
    small = plain.replace(attn_bwd_efficiency_d64=0.88)
    for d, faster in ((64, True), (32, True), (80, False), (128, False)):
        base = estimate(layout, d, backward=True, device=plain)
        got = estimate(layout, d, backward=True, device=small)
        assert (got.predicted_ms < base.predicted_ms) is faster, d
        assert got.sparse.kernels[0].ms == base.sparse.kernels[0].ms          # the forward
    same = plain.replace(attn_bwd_efficiency_d64=plain.attn_bwd_efficiency)
    assert (estimate(layout, 64, backward=True, device=same).predicted_ms
            == estimate(layout, 64, backward=True, device=plain).predicted_ms)
    for key in ("h100", "h200"):
        assert DEVICES[key].attn_bwd_efficiency_d64 is not None, key


def test_fp32_uses_the_fp32_peak():
    # sparse_attention runs fp32 dots without tf32, like eager torch's default
    layout = sf.compile(sf.dense(), 8192, num_heads=8)
    p = get_device("h100").for_call(layout.block_size, 128, torch.float32)
    assert p == PLAIN            # fp32 runs the portable kernels
    est = estimate(layout, 128, dtype=torch.float32)
    kernel = est.sparse.kernels[0]
    assert kernel.bound == "compute"
    assert kernel.ms == pytest.approx(est.flops / (p.peak_fp32_tflops * 1e12 * p.attn_fwd_efficiency) * 1e3
                                      + p.launch_overhead_us / 1e3)
    assert est.predicted_ms > 10 * estimate(layout, 128, dtype=torch.bfloat16).predicted_ms
    assert p.matmul_tflops(torch.float32, tf32=True) == p.peak_tf32_tflops


def test_printing_is_a_table_of_the_three_methods():
    layout = sf.compile(sf.bigbird(window=1, globals=1, random=1), 8192, num_heads=4)
    est = estimate(layout, 64, backward=True)
    text = str(est)
    assert text == est.to_string()
    lines = text.splitlines()
    rows = [ln for ln in lines if ln.strip().startswith(("sparseflash", "dense Flash", "standard"))]
    assert len(rows) == 3
    assert "forward + backward" in lines[0] and DEVICES["h100"].name in lines[0]
    assert f"{layout.density:.2%}" in text and f"{layout.nnz:,}" in text
    ours = rows[0].split()
    assert ours[-1] == "1.00x"
    assert f"{est.predicted_ms:.3f}" in rows[0]
    assert f"{est.standard.predicted_ms:.3f}" in rows[2]
    assert rows[2].split()[-1] == f"{est.speedup_vs_standard:.2f}x"


@pytest.mark.parametrize("kwargs,match", [
    (dict(head_dim=0), "head_dim"),
    (dict(head_dim=64, batch=0), "batch"),
    (dict(head_dim=64, dtype=torch.int8), "dtype"),
])
def test_bad_input(kwargs, match):
    layout = sf.compile(sf.local(1), 512, block_size=64)
    with pytest.raises(ValueError, match=match):
        estimate(layout, **kwargs)
    with pytest.raises(TypeError, match="layout"):
        estimate("local(1)", 64)


def test_top_level_exports():
    assert sf.estimate is estimate
    assert sf.DeviceProfile is DeviceProfile and sf.DEVICES is DEVICES
    assert isinstance(sf.estimate(sf.compile(sf.dense(), 256, block_size=64), 64), sf.CostEstimate)
    assert math.isfinite(sf.estimate(sf.compile(sf.dense(), 256, block_size=64), 64).predicted_ms)


def test_dropout_random_numbers_are_counted():
    layout = sf.compile(sf.local(1), 1024, block_size=64, causal=True, num_heads=2)
    assert estimate(layout, 64).dropout_random_numbers == 0
    fwd = estimate(layout, 64, batch=3, dropout_p=0.1)
    assert fwd.dropout_random_numbers == layout.nnz * 64 * 64 * 3
    assert estimate(layout, 64, batch=3, dropout_p=0.1, backward=True).dropout_random_numbers == 3 * fwd.dropout_random_numbers
    # the fused dQ backward (the Hopper kernels', blocks of 128) draws the mask once, not
    # twice; blocks of 64 run the portable kernels, whose dQ and dK/dV kernels both draw it
    hopper = sf.compile(sf.local(1), 1024, block_size=128, causal=True, num_heads=2)
    once = estimate(hopper, 64, batch=3, dropout_p=0.1, device="h200")
    fused = estimate(hopper, 64, batch=3, dropout_p=0.1, backward=True, device="h200")
    assert fused.dropout_random_numbers == 2 * once.dropout_random_numbers
    portable = estimate(layout, 64, batch=3, dropout_p=0.1, backward=True, device="h200")
    assert portable.dropout_random_numbers == 3 * fwd.dropout_random_numbers
    # Philox calls: eight 16-bit draws a call, sixteen 8-bit ones
    from sparseflash import philox
    assert fwd.dropout_philox_calls * (128 // philox.dropout_variant()[0]) == fwd.dropout_random_numbers
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(philox, "DROPOUT_BITS", 16)
        assert estimate(layout, 64, batch=3, dropout_p=0.1).dropout_philox_calls == layout.nnz * 64 * 64 * 3 // 8
        mp.setattr(philox, "DROPOUT_BITS", 8)
        assert estimate(layout, 64, batch=3, dropout_p=0.1).dropout_philox_calls == layout.nnz * 64 * 64 * 3 // 16
    assert estimate(layout, 64).dropout_philox_calls == 0
    assert [k.name for k in fused.sparse.kernels if k.name.startswith("attn_bwd")] == [
        "attn_bwd_stats", "attn_bwd_dq_zero", "attn_bwd_fused", "attn_bwd_dq_convert"]
    with pytest.raises(ValueError, match="dropout_p"):
        estimate(layout, 64, dropout_p=1.0)


def test_density_denominator_sums_every_sequence():
    from sparseflash.compiler import compile_sequences

    layout = compile_sequences(sf.local(1), [100, 300], [100, 300], block_size=64, causal=True,
                               num_heads=2, packed=True)
    est = estimate(layout, 64)
    assert est.grid_blocks == layout.grid_blocks == 2 * (2 * 2 + 5 * 5)
    assert est.density == pytest.approx(layout.nnz / est.grid_blocks)


def test_exponentials_bind_at_small_head_dims():
    """``attn_exp_per_ns``: one exponential per computed score and kernel (forward; dQ and
    dK/dV recompute P). With a slow enough unit the forward is exp-bound at d=64 and its time
    is the scores over the rate; at d=128 the same rate hides under the matmuls."""
    layout = sf.compile(sf.dense(), 16384, num_heads=32)
    scores = layout.nnz * 128 * 128
    base = PLAIN.replace(launch_overhead_us=0.0)
    slow = base.replace(attn_exp_per_ns=1000.0)
    fwd = estimate(layout, 64, device=slow).sparse.kernels[0]
    assert fwd.name == "attn_fwd" and fwd.bound == "compute"
    assert fwd.ms == pytest.approx(scores / 1e9)                    # 1000 a ns = 1e12 a s
    assert fwd.ms > estimate(layout, 64, device=base).sparse.kernels[0].ms
    at128 = estimate(layout, 128, device=slow).sparse.kernels[0]
    assert at128.ms == pytest.approx(estimate(layout, 128, device=base).sparse.kernels[0].ms)
    bwd = estimate(layout, 64, device=slow, backward=True).sparse.kernels
    assert [k.name for k in bwd] == ["attn_fwd", "attn_bwd_dq", "attn_bwd_dkdv"]
    assert all(k.ms >= scores / 1e9 for k in bwd)


def test_tile_overhead_adds_per_tile_time_spread_over_the_sms():
    """``attn_tile_overhead_us``: each query tile (forward, dQ) or key tile (dK/dV) adds a
    fixed time, ``num_sms`` tiles at a time: short rows cost more per FLOP than long ones."""
    layout = sf.compile(sf.local(2), 16384, num_heads=8)
    base = PLAIN.replace(launch_overhead_us=0.0)
    plus = base.replace(attn_tile_overhead_us=5.0)
    tiles = 8 * (16384 // 128)
    for backward, kernels in ((False, 1), (True, 3)):
        a = estimate(layout, 128, device=base, backward=backward, batch=2).sparse
        b = estimate(layout, 128, device=plus, backward=backward, batch=2).sparse
        extra = kernels * 2 * tiles / base.num_sms * 5.0 / 1e3
        assert b.predicted_ms == pytest.approx(a.predicted_ms + extra)


def test_calibrate_reads_the_hopper_benchmark_rows():
    """``benchmarks.calibrate`` maps ``benchmarks/hopper.py`` cases to the layouts they ran
    (dense at B*N = 16K, sparse at B = 1, H = 2048 / d) and fits on them."""
    from benchmarks.calibrate import Model, hopper_rows, timed_rows

    rows = [dict(case="dense causal N=4096 d=64", impl="ours", **{"pass": "fwd"}, ms=0.74),
            dict(case="bigbird(3,2,3) N=16384 d=128 density=0.106", impl="ours", **{"pass": "fwd+bwd"},
                 ms=1.98),
            dict(case="dense N=4096 d=64", impl="fa4", **{"pass": "fwd"}, ms=1.0),
            dict(case="dense N=4096 d=64", impl="ours", **{"pass": "kernel"}, ms=float("nan"))]
    got = timed_rows(hopper_rows(rows))
    assert [(r["pattern"], r["seq_len"], r["causal"], r["heads"], r["head_dim"], r["batch"], r["suite"])
            for r in got] == [("dense()", 4096, True, 32, 64, 4, "dense"),
                              ("bigbird(3,2,3)", 16384, False, 16, 128, 1, "sparse")]
    model = Model(got, "h200", ["attn_fwd_efficiency"])
    assert model.names == ["attn_fwd_efficiency"] and model.predict(model.initial()).shape == (2,)
    with pytest.raises(ValueError, match="fields"):
        Model(got, "h200", ["not_a_field"])


def test_calibrate_selects_rows_by_head_dim_and_leaves_rows_out(capsys):
    """``python -m benchmarks.calibrate PATH@D --exclude 'CASE_PREFIX|PASS'``: a file's rows of
    one head dim, less the excluded rows (run26's d=64 file has 14 timed rows of ours: 7 cases,
    forward and forward+backward); malformed selections are refused."""
    from benchmarks.calibrate import main

    path = _RESULTS / "run26-kv-regs" / "call1" / "peers" / "hopper.json"
    args = ["--device", "h200", "--fields", "attn_bwd_efficiency_d64", "--no-write", "--worst", "0"]
    assert main([f"{path}@64", *args]) == 0
    assert "on 14 measurements" in capsys.readouterr().out
    assert main([f"{path}@64", "--exclude", "dense causal|fwd+bwd", *args]) == 0
    assert "on 12 measurements" in capsys.readouterr().out
    assert main([f"{path}@128", *args]) == 1                      # no d=128 rows in that file
    assert "nothing to fit" in capsys.readouterr().out
    for bad in ([f"{path}@x", *args], [str(path), "--exclude", "dense causal", *args]):
        with pytest.raises(SystemExit):
            main(bad)


# ------------------------------------------------------------------ options' measured time
_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "h200-hopper"


def _parity_layouts(N=16384, H=16, b=128):
    return {"dense": sf.compile(sf.dense(), N, block_size=b, causal=True, num_heads=H),
            "local": sf.compile(sf.local(8) | sf.global_blocks(1), N, block_size=b, causal=True,
                                num_heads=H)}


def _times(path, suite=None):
    """{(layout, impl): {"fwd": ms, "fwd+bwd": ms}} of a committed parity.py result file."""
    import json

    times = {}
    for r in json.loads((_RESULTS / path).read_text())["rows"]:
        if r["pass"] in ("fwd", "fwd+bwd") and suite in (None, r["suite"]):
            case = "dense" if r["case"].startswith("dense") else "local"
            times.setdefault((case, r["impl"]), {})[r["pass"]] = r["ms"]
    return times


def _samples_of(sources):
    """option -> [(forward ps, backward ps) a computed score] from ``sources``: (option, result
    file under benchmarks/results/h200-hopper, suite or None, the impl without the option, the
    impl with it), each file's dense and local cases one sample each."""
    scores = {case: layout.nnz * 128 * 128 for case, layout in _parity_layouts().items()}
    samples = {}
    for option, path, suite, base, impl in sources:
        t = _times(path, suite=suite)
        for case in ("dense", "local"):
            fwd = (t[(case, impl)]["fwd"] - t[(case, base)]["fwd"]) * 1e9 / scores[case]
            bwd = (t[(case, impl)]["fwd+bwd"] - t[(case, base)]["fwd+bwd"]) * 1e9 / scores[case] - fwd
            samples.setdefault(option, []).append((fwd, bwd))
    return samples


_PARITY = ("parity", "sparseflash")           # the parity suite: its suite name and baseline impl
_VARIANTS = (None, "none")                    # parity.py --variants

# The committed H200 runs the h200 profile's prices come from: softcap 30 since the forward's
# fixed shift, run23's parity suite and variants (d=128 with the shift, d=64 with the running
# max); dropout 0.1 in its default draws since run21 (16-bit "quad", 7 rounds), run21's variants
# (d=128 and d=64) and parity suite (d=128), and run22's parity suite (dropout, ALiBi) and
# variants (ALiBi: the impls timed interleaved after a heat phase; the causal ALiBi's forward
# walks from the diagonal since, so its samples are run22's alone).
_H200_SOURCES = (
    ("softcap", "../h200-parity/run23-softcap-shift/call2/parity/parity.json", *_PARITY, "sparseflash softcap=30"),
    ("softcap", "../h200-parity/run23-softcap-shift/call3/variants_d128/variants.json", *_VARIANTS, "softcap=30 folded"),
    ("softcap", "../h200-parity/run23-softcap-shift/call4/variants_d128/variants.json", *_VARIANTS, "softcap=30 folded"),
    ("softcap", "../h200-parity/run23-softcap-shift/call2/variants_d64/variants.json", *_VARIANTS,
     "softcap=30 folded, running max"),
    ("dropout", "../h200-parity/run22-descending/call5/parity/parity.json", *_PARITY, "sparseflash dropout_p=0.1"),
    ("alibi", "../h200-parity/run22-descending/call5/parity/parity.json", *_PARITY, "sparseflash alibi_slopes (H,)"),
    ("alibi", "../h200-parity/run22-descending/call5/variants/variants.json", *_VARIANTS, "alibi column"),
    ("dropout", "../h200-parity/run21-quad/call1/variants_d128/variants.json", *_VARIANTS, "dropout 16-bit quad, 7 rounds"),
    ("dropout", "../h200-parity/run21-quad/call2/variants_d64/variants.json", *_VARIANTS, "dropout 16-bit quad, 7 rounds"),
    ("dropout", "../h200-parity/run21-quad/call3/parity/parity.json", *_PARITY, "sparseflash dropout_p=0.1"),
)

# The committed H100 runs of today's kernels the h100 profile's prices come from: dropout 0.1
# since stop 61's form 19 (run42 call 2's variants at d=128 and d=64, the parity suites of run43,
# run47, run48 and run49); softcap 30 since stop 68's dK/dV factor before dV's product (run49's
# calls 1 and 2, variants, and call 3, its parity suite); the causal ALiBi since stop 66's
# defaults (the folded rows, the dK/dV output copy by the table's rule at d=128): run48 call 1's
# variants ("alibi column") and the parity suites of run48 (call 11) and run49 (call 3).
_H100_SOURCES = (
    ("dropout", "run42-stop61/call2/variants128/variants.json", *_VARIANTS, "dropout 16-bit quad, 7 rounds"),
    ("dropout", "run42-stop61/call2/variants64/variants.json", *_VARIANTS, "dropout 16-bit quad, 7 rounds"),
    ("dropout", "run43-stop62/call4-parity/parity/parity.json", *_PARITY, "sparseflash dropout_p=0.1"),
    ("dropout", "run47-stop66/call4-test-parity/p/parity/parity.json", *_PARITY, "sparseflash dropout_p=0.1"),
    ("dropout", "run48-stop67/call11-parity/parity/parity.json", *_PARITY, "sparseflash dropout_p=0.1"),
    ("dropout", "run49-stop68/call3-parity/parity/parity.json", *_PARITY, "sparseflash dropout_p=0.1"),
    # the softcap's kernels since stop 68 (the dK/dV factor taken into P^T before dV's product,
    # launch.HOPPER_BWD_CAP_EARLY): run49's three calls; the earlier runs timed the order before
    ("softcap", "run49-stop68/call1-poly/poly/variants.json", *_VARIANTS, "softcap=30 folded, dK/dV cap early"),
    ("softcap", "run49-stop68/call2-early/early128/variants.json", *_VARIANTS, "softcap=30 folded"),
    ("softcap", "run49-stop68/call3-parity/parity/parity.json", *_PARITY, "sparseflash softcap=30"),
    ("alibi", "run48-stop67/call1-defaults/copy128/variants.json", *_VARIANTS, "alibi column"),
    ("alibi", "run48-stop67/call11-parity/parity/parity.json", *_PARITY, "sparseflash alibi_slopes (H,)"),
    ("alibi", "run49-stop68/call3-parity/parity/parity.json", *_PARITY, "sparseflash alibi_slopes (H,)"),
)


@pytest.mark.parametrize("device,sources", [("h200", _H200_SOURCES), ("h100", _H100_SOURCES)])
def test_option_prices_are_the_medians_of_the_committed_measurements(device, sources):
    """Each (forward, backward) price of the device's profile is the median, per pass, of the
    per-score differences in the committed runs (to the profile's two decimals)."""
    prices = {name: (fwd, bwd) for name, fwd, bwd in DEVICES[device].option_ps_per_score}
    samples = _samples_of(sources)
    assert set(prices) == set(samples) == {"dropout", "softcap", "alibi"}
    for name, pairs in samples.items():
        for i in (0, 1):
            assert prices[name][i] == pytest.approx(float(np.median([p[i] for p in pairs])), abs=0.006), \
                (name, i, pairs)


def test_options_add_their_measured_time_to_ours_and_dense():
    layout = _parity_layouts()["dense"]
    scores = layout.nnz * 128 * 128
    prices = {name: (fwd, bwd) for name, fwd, bwd in DEVICES["h200"].option_ps_per_score}
    for backward in (False, True):
        base = estimate(layout, 128, device="h200", backward=backward)
        got = estimate(layout, 128, device="h200", backward=backward, dropout_p=0.1, softcap=30.0,
                       alibi=True)
        added = sum(f + (b if backward else 0.0) for f, b in prices.values()) * scores * 1e-9
        assert got.predicted_ms - base.predicted_ms == pytest.approx(added, rel=1e-9)
        assert got.dense.predicted_ms - base.dense.predicted_ms == pytest.approx(added, rel=1e-9)
        assert got.standard.predicted_ms == base.standard.predicted_ms
        assert got.flops == base.flops and got.hbm_bytes == base.hbm_bytes
        assert got.unpriced_options == ()
        assert "included: dropout, softcap, alibi" in str(got)
    # the predicted overhead of dropout against run21's measured 1.40 (forward+backward) and
    # 1.62 (forward), dense causal 16K (call3 parity, the default draws): the base times are
    # the model's own, within 10%
    for backward, measured in ((True, 1.4025), (False, 1.6231)):
        ratio = (estimate(layout, 128, device="h200", backward=backward, dropout_p=0.1).predicted_ms
                 / estimate(layout, 128, device="h200", backward=backward).predicted_ms)
        assert ratio == pytest.approx(measured, rel=0.1)


def test_h100_predicts_the_option_overheads_of_its_parity_run():
    """The h100 profile's predicted overhead of each option (time with it / without, the
    model's own base times) against run49's parity suite on an H100 (one of its sources), within
    10%: dense causal and local(8)|global causal, 16K, d=128, forward and forward+backward."""
    layouts = _parity_layouts()
    t = _times("run49-stop68/call3-parity/parity/parity.json", suite="parity")
    for case, layout in layouts.items():
        for kw, impl in ((dict(dropout_p=0.1), "sparseflash dropout_p=0.1"),
                         (dict(softcap=30.0), "sparseflash softcap=30"),
                         (dict(alibi=True), "sparseflash alibi_slopes (H,)")):
            for backward, p in ((False, "fwd"), (True, "fwd+bwd")):
                base = estimate(layout, 128, device="h100", backward=backward)
                got = estimate(layout, 128, device="h100", backward=backward, **kw)
                assert got.unpriced_options == ()
                measured = t[(case, impl)][p] / t[(case, "sparseflash")][p]
                assert got.predicted_ms / base.predicted_ms == pytest.approx(measured, rel=0.1), (case, impl, p)


def test_options_without_measurements_are_named_not_priced():
    layout = sf.compile(sf.local(2), 4096, block_size=128, causal=True, num_heads=4)
    unpriced = DEVICES["h100"].replace(option_ps_per_score=())
    base = estimate(layout, 64, device=unpriced, backward=True)
    got = estimate(layout, 64, device=unpriced, backward=True, dropout_p=0.2, alibi=True)
    assert got.predicted_ms == base.predicted_ms
    assert got.unpriced_options == ("dropout", "alibi")
    assert "not in the times: dropout, alibi" in str(got)
    # a profile given prices for some options prices those only
    partial = DEVICES["h100"].replace(option_ps_per_score=(("softcap", 1.0, 2.0),))
    got = estimate(layout, 64, device=partial, softcap=5.0, alibi=True)
    assert got.unpriced_options == ("alibi",)
    assert got.predicted_ms - estimate(layout, 64, device=partial).predicted_ms == \
        pytest.approx(layout.nnz * 128 * 128 * 1.0e-9)


@pytest.mark.parametrize("kw,match", [
    (dict(softcap=-1.0), "softcap must be a finite float >= 0"),
    (dict(softcap=float("nan")), "softcap must be a finite float >= 0"),
    (dict(softcap=float("inf")), "softcap must be a finite float >= 0"),
    (dict(softcap=True), "softcap must be a finite float >= 0"),
    (dict(softcap="30"), "softcap must be a finite float >= 0"),
    (dict(alibi=1), "alibi must be True or False"),
    (dict(alibi=None), "alibi must be True or False"),
])
def test_option_arguments_are_checked(kw, match):
    layout = sf.compile(sf.local(1), 512, block_size=128)
    with pytest.raises(ValueError, match=match):
        estimate(layout, 64, **kw)


# (run, its hopper.json files with the head dim of the rows taken from each (None: all), bound
# on the median, on the forward+backward median, on each row, rows allowed more, and how much
# more). "run26" is the kernels of today: run24's d=128 rows (unchanged since) and run26's d=64
# rows (128-query steps, dQ by rows, K and V in registers: benchmarks/results/h200/fa4_ratio.json)
_PEERS_RUNS = {
    "run23": (("run23-interleaved/call8/dense", None), ("run23-interleaved/call7/sparse", None)),
    "run24": (("run24-bwd-profile/call6/peers", None), ("run24-bwd-profile/call7/peers", None)),
    "run26": (("run24-bwd-profile/call6/peers", 128), ("run24-bwd-profile/call7/peers", 128),
              ("run26-kv-regs/call1/peers", 64)),
    "run28": (("run28-lpt-dynamic/call5/peers", None),),
    "run30-call7": (("run30-kv-split/call7/peers", None),),
    "run30-call8": (("run30-kv-split/call8/peers", None),),
    "run32-call3": (("run32-stop50/call3/peers", None),),
}
_SLOW_ROW = (("local(2) N=16384 d=128", "fwd+bwd"),)
_PEERS_BOUNDS = {       # median, forward+backward median, each row; rows with their own bound
    "run23": (0.08, 0.09, 0.15, _SLOW_ROW, 0.20),
    "run24": (0.06, 0.07, 0.13, _SLOW_ROW, 0.42),
    "run26": (0.045, 0.035, 0.12, _SLOW_ROW, 0.42),
    "run28": (0.03, 0.025, 0.10, (), 0.0),
    "run30-call7": (0.025, 0.03, 0.08, _SLOW_ROW, 0.35),
    "run30-call8": (0.025, 0.025, 0.08, (), 0.0),
    "run32-call3": (0.025, 0.03, 0.16, _SLOW_ROW, 0.42),
}


def test_h100_profile_describes_the_kernels_each_call_runs():
    """``DeviceProfile.for_call``: the h100 (and h200) profile's own fields (the Hopper kernels') for
    fp16/bf16 calls at head dim 64 or 128 on blocks of 128, its ``portable_fields`` for every
    other call; ``runs_hopper_kernels`` follows the dispatcher's constants."""
    from sparseflash.estimate import runs_hopper_kernels
    from sparseflash.kernels import launch

    assert sorted(launch._HOPPER_STAGES) == [64, 128] and launch._HOPPER_TILE == 128
    h100 = DEVICES["h100"]
    for block, d, dtype, hopper in ((128, 128, torch.bfloat16, True), (256, 64, torch.float16, True),
                                    (64, 128, torch.bfloat16, False), (128, 80, torch.bfloat16, False),
                                    (128, 128, torch.float32, False)):
        assert runs_hopper_kernels(block, d, dtype) is hopper
        got = h100.for_call(block, d, dtype)
        assert (got is h100) is hopper
        assert got.fused_dq_backward is hopper and (got.attn_tile_overhead_us > 0) is hopper
    assert PLAIN.attn_fwd_efficiency == 0.50 and PLAIN.portable_fields == ()
    # the time follows: blocks of 64 price the portable kernels
    layout = sf.compile(sf.dense(), 8192, block_size=64, num_heads=8)
    assert estimate(layout, 128).predicted_ms == estimate(layout, 128, device=PLAIN).predicted_ms
    assert estimate(layout, 128).device == PLAIN
    # h200 the same (its portable kernels were checked with these values too)
    assert DEVICES["h200"].for_call(64, 80, torch.float32).attn_fwd_efficiency == 0.50
    assert DEVICES["h200"].for_call(128, 64, torch.bfloat16) is DEVICES["h200"]
    # a profile without portable fields describes every call with its own
    assert DEVICES["a100"].for_call(64, 80, torch.float32) is DEVICES["a100"]


def _estimator_check(run):
    """``benchmarks/results/h200-hopper/<run>/estimator_check.py``, imported as a module."""
    import importlib.util

    path = _RESULTS / run / "estimator_check.py"
    spec = importlib.util.spec_from_file_location(f"{run.replace('-', '_')}_estimator_check", path)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    return check


def test_h100_profile_predicts_the_hopper_kernels_on_an_h100():
    """The h100 profile (the Hopper kernels' fields of the h200 fit, the H100's bandwidth)
    against run33's 18 H100 timings (stop 51: 7 cases forward and forward+backward with GPU
    sleep queued ahead, 4 dense forwards; ``run33-stop51/estimator_check.py``, which prints
    both profiles' errors). When written: median 4.9%, largest +26.6% (local(2) 64K's forward,
    the bandwidth term at 3.35 TB/s) and +16.3% (local(2) 16K's); the provisional profile it
    replaced had 11.9% and 28.7%. Fails if the profile or the cost model drifts from them."""
    check = _estimator_check("run33-stop51")
    err = {(name, pass_): abs(e) for name, pass_, _, _, e in check.relative_errors("h100")}
    assert len(err) == 18
    assert np.median(list(err.values())) <= 0.06, sorted(err.values())[-5:]
    short = {("local(2) N=65536 d=128", "fwd"), ("local(2) N=16384 d=128", "fwd")}
    assert all(e <= (0.30 if key in short else 0.13) for key, e in err.items()), err


def test_profiles_predict_stop_57s_h100_timings_out_of_sample():
    """The h100 and h200 profiles against 72 H100 timings fitted on by neither: run38 call 4
    (stop 56, all 20 cases of ``benchmarks/hopper.py``, ours forward and forward+backward) and
    run39 calls 2 and 3 (stop 57, the 8 dense cases twice; ``run39-stop57/estimator_check.py``).
    When written: h100 median 2.1%, largest 14.5% (local(2) 16K's forward) and 12.5% (local(2)
    64K's); h200 median 2.1%, largest 10.2%. Fails if a profile or the cost model drifts."""
    check = _estimator_check("run39-stop57")
    table = list(check.rows())
    assert len(table) == 72
    short = {"local(2) N=65536 d=128 density=0.010", "local(2) N=16384 d=128 density=0.039"}
    for i in (4, 5):                                   # the h100 and h200 predictions
        err = [abs(t[i] - t[3]) / t[3] for t in table]
        assert np.median(err) <= 0.03, sorted(err)[-5:]
        assert all(e <= (0.16 if t[1] in short else 0.11) for t, e in zip(table, err)), \
            [(t[1], t[2], round(e, 3)) for t, e in zip(table, err) if e > 0.08]


@pytest.mark.parametrize("run", sorted(_PEERS_RUNS))
def test_h200_profile_predicts_the_interleaved_peers_run(run):
    """The h200 profile against the interleaved peers runs, 40 timings each on the same 20 cases
    (``benchmarks/hopper.py``: dense 4K-16K, sparse 1-43% density at 16K-64K, d=64/128). Its
    forward fields were fitted in stop 47 to run30 call 8 (run30's forward pipeline, the
    default since), its backward efficiencies, one at d=128 and one at d<=64
    (``attn_bwd_efficiency_d64``), in stop 42 to run26's set. So run30 call 8 is in sample and
    run30 call 7 (the same kernels, the rows of ``benchmarks/results/h200/fa4_ratio.json``) is
    not. Errors when written: run30 call 7 median 1.8% (forward 1.4%, forward+backward 2.2%,
    worst 5.7% but the row below); call 8 1.8% (1.2%, 1.9%; worst 6.4%, local(28) 16K d=64's
    forward). run32 call 3 (stop 50, the same kernels, out of sample): 1.8% (forward 1.7%,
    forward+backward 2.1%; under-predicted by 14% on butterfly's forward+backward, timed
    slow like the row below, −37% there; then 6.4%). The older runs timed kernels that have
    changed since, whose forward paid a larger fixed cost a tile; they bound the drift: run28
    2.7% (worst 8.5%), run26 3.8%, run24 5.3%, run23 7.2% (worst 13.6%). local(2) 16K's
    forward+backward row, timed in a slow mode in five of the runs (all impls slower in run30
    call 7 and run32 call 3), is under-predicted by up to 38% and gets its own bound. Fails if the profile or the cost model drifts from the measured kernels."""
    from benchmarks.calibrate import Model, load_rows, median_rel_error, timed_rows

    median_max, fwd_bwd_max, row_max, loose_rows, loose_max = _PEERS_BOUNDS[run]
    rows = []
    for name, d in _PEERS_RUNS[run]:
        rows += [r for r in load_rows(_RESULTS / name / "hopper.json")[1] if d in (None, r["head_dim"])]
    rows = timed_rows(rows)
    assert len(rows) == 40
    model = Model(rows, "h200", ["attn_fwd_efficiency"])
    pred = model.predict(model.initial())
    err = np.abs(pred - model.measured) / model.measured
    assert median_rel_error(pred, model.measured) <= median_max, sorted(err)[-5:]
    both = [i for i, r in enumerate(rows) if r["pass"] == "fwd+bwd"]
    assert len(both) == 20 and np.median(err[both]) <= fwd_bwd_max, sorted(err[both])[-5:]
    loose = [any(r["case"].startswith(case) and r["pass"] == pass_ for case, pass_ in loose_rows)
             for r in rows]
    assert sum(loose) == len(loose_rows)
    bounds = np.where(loose, loose_max, row_max)
    assert (err <= bounds).all(), [(r["case"], r["pass"], e) for r, e, b in zip(rows, err, bounds) if e > b]
