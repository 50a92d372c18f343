"""IO-cost estimator: FLOPs, HBM bytes and a roofline time for a compiled layout.

The model (written out with formulas in ``docs/estimator.md``) counts, for three ways of
computing the same attention:

* **sparseflash** -- our block-sparse FlashAttention kernel, walking the layout's tables;
* **dense FlashAttention** -- the same kernel design over every block of the grid (with the
  causal triangle skipped when the layout is causal, as FlashAttention does);
* **standard attention** -- matmul, softmax, matmul, materialising the N x N scores in HBM.

Each is a list of kernels. A kernel's time is its own roofline,
``max(flops / (peak * efficiency), bytes / (bandwidth * bandwidth_efficiency))``, plus a
launch overhead; a method's time is the sum over its kernels.

Symbols, per (batch, head): ``N = seq_len``, ``Nk = kv_len``, ``d = head_dim``,
``b = block_size``, ``e`` = bytes per element of ``dtype``, ``nnz`` = computed block pairs
(``BlockLayout.nnz`` already sums over heads).

Device profiles live in one table, :data:`DEVICES`; add one with :func:`register_device` or
pass a :class:`DeviceProfile` as ``device``. Their ``attn_*_efficiency`` fields are the
calibration knobs that the performance issue fits on a real H100.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .layout import BlockLayout
from .philox import dropout_variant

__all__ = [
    "DeviceProfile", "DEVICES", "register_device", "get_device",
    "KernelCost", "MethodCost", "CostEstimate", "estimate",
]

_LSE_BYTES = 4     # LSE and delta are float32, one per query row
_ACC_BYTES = 4     # the fused backward's dQ accumulator is float32
_INDEX_BYTES = 4   # table entries are int32
_MASK_BYTES = 1    # a bool N x N mask, read by standard attention's masking pass


# ----------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class DeviceProfile:
    """Peak figures of one GPU plus the calibration factors of the roofline.

    Peak figures are vendor data sheet numbers (dense, no 2:4 sparsity).
    The ``*_efficiency`` fields are the fraction of the peak a kernel class achieves;
    they are what calibration on real hardware adjusts.
    """

    name: str
    peak_bf16_tflops: float      # dense bf16/fp16 tensor-core matmul, TFLOP/s
    peak_tf32_tflops: float      # dense tf32 tensor-core matmul (fp32 inputs with tf32 allowed)
    peak_fp32_tflops: float      # CUDA-core fp32 (fp32 matmuls with tf32 off, torch's default)
    hbm_gbps: float              # HBM bandwidth, GB/s (1e9 bytes)
    sram_kib_per_sm: int         # shared memory per SM: the FlashAttention "M"
    num_sms: int
    # -- calibration: fraction of peak matmul throughput achieved ---------------------------
    attn_fwd_efficiency: float = 0.50   # our attention forward kernel
    attn_bwd_efficiency: float = 0.44   # our attention backward kernels (dK/dV and dQ)
    # The backward's at head dims up to 64, where the Hopper kernels take another form (128-query
    # steps, K and V as register operands); None: ``attn_bwd_efficiency`` at every head dim.
    attn_bwd_efficiency_d64: Optional[float] = None
    # Exponentials a nanosecond our attention kernels reach (one per computed score and
    # kernel: the forward's softmax, the backward kernels' recomputed P), a second compute
    # limit beside the matmuls': the special-function units (16 a clock per SM on Hopper) bind
    # at small head dims, where a score costs few FLOPs. None: no such limit.
    attn_exp_per_ns: Optional[float] = None
    # Fixed time of one query (or key) tile of our attention kernels, its start and finish
    # (Q's copy, the output's stores), spread over the SMs: what makes short rows slower per
    # FLOP than long ones.
    attn_tile_overhead_us: float = 0.0
    matmul_efficiency: float = 0.80     # cuBLAS matmuls of standard attention
    bandwidth_efficiency: float = 0.90  # fraction of hbm_gbps a streaming kernel reaches
    launch_overhead_us: float = 4.0     # fixed cost per kernel launch
    # Fraction of tile re-reads (K/V per computed block; Q/dO in dK/dV) that L2 serves, so
    # they cost no HBM time. hbm_bytes counts them all, as FlashAttention's IO analysis does.
    tile_l2_hit_rate: float = 0.5
    # Measured time of eager matmul-softmax-matmul over its roofline here (many small passes,
    # fp32 softmax internals): docs/anchors.md's 46 TFLOP/s at B=4, H=16, N=4K, d=128 against
    # the model's 186 TFLOP/s gives 4.
    eager_slowdown: float = 4.0
    calibrated: str = "not calibrated"  # where the efficiency numbers come from
    # The backward our kernels run on this device: False, a dQ kernel that recomputes S and dP
    # beside the dK/dV kernel (the portable kernels); True, the Hopper dK/dV kernel with dQ
    # fused in (kernels/launch.py HOPPER_FUSED_DQ): a statistics prologue, one kernel that adds
    # each block's dS K to an fp32 accumulator, and the accumulator's zero fill and conversion.
    fused_dq_backward: bool = False
    # Time the attention options add on this device, in picoseconds per computed score (each
    # score of each computed block pair, per head and batch element): (option, forward,
    # backward) for "dropout", "softcap" and "alibi". Measured as differences of times with and
    # without the option in one run (benchmarks/parity.py), not from a model of the kernels.
    # Empty: not measured here; estimate() then leaves the options out of the time and says so
    # (CostEstimate.unpriced_options).
    option_ps_per_score: Tuple[Tuple[str, float, float], ...] = ()
    # Fields that describe the portable kernels where the fields above describe the Hopper ones:
    # (field, value) pairs that replace them for calls the Hopper kernels do not run (see
    # :func:`runs_hopper_kernels`). Empty: the fields above describe every call.
    portable_fields: Tuple[Tuple[str, object], ...] = ()

    def matmul_tflops(self, dtype: torch.dtype, *, tf32: bool) -> float:
        """Peak matmul throughput for ``dtype`` (fp32 uses tf32 when ``tf32`` is set)."""
        if dtype in (torch.bfloat16, torch.float16):
            return self.peak_bf16_tflops
        if dtype == torch.float32:
            return self.peak_tf32_tflops if tf32 else self.peak_fp32_tflops
        raise ValueError(f"dtype must be torch.bfloat16, torch.float16 or torch.float32, got {dtype}")

    def replace(self, **changes) -> "DeviceProfile":
        """A copy with some fields changed, e.g. ``DEVICES['h100'].replace(attn_fwd_efficiency=0.6)``."""
        return dataclasses.replace(self, **changes)

    def for_call(self, block_size: int, head_dim: int, dtype: torch.dtype) -> "DeviceProfile":
        """The profile of the kernels that run such a call: itself, or with
        ``portable_fields`` applied where the Hopper kernels do not run it."""
        if not self.portable_fields or runs_hopper_kernels(block_size, head_dim, dtype):
            return self
        return self.replace(portable_fields=(), **dict(self.portable_fields))


def runs_hopper_kernels(block_size: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether sparse_attention runs the Hopper (sm_90) kernels for such a call on a Hopper
    GPU: fp16/bf16, head dim 64 or 128, blocks a multiple of 128 (kernels/launch.py
    ``_hopper_applies``; its other reasons, such as dropout's "interleave" mapping, strides
    or huge scales, are the call's, not the layout's)."""
    return dtype in (torch.float16, torch.bfloat16) and head_dim in (64, 128) and block_size % 128 == 0


# Provisional efficiencies (the defaults above): FlexAttention on H100 (docs/anchors.md), d=128,
# N=16K, non-causal, 495 TFLOP/s forward and 432 TFLOP/s backward-only out of 989; matmul
# 795/989; copy 3.0/3.35 TB/s. The A100 entry reuses them until measured.
#
# The Hopper kernels (kernels/hopper.py, fused-dQ backward), fitted on an H200: the forward's
# three fields (stop 47) to run30's forward, now the default (h200-hopper/run30-kv-split/call8/
# peers/calibration.txt; its two Q buffers and persistent CTAs roughly halved a tile's fixed
# cost, 4.92 -> 2.59 us); the backward efficiencies (stop 42) to the kernels of run26: run24's
# d=128 rows and run26-kv-regs/call1's d=64 rows (docs/estimator.md, "A backward efficiency per
# head dim"). The H100 has the H200's SMs, clocks and tensor peak, and the kernels' forward took
# the same time on both (stop 51, run33: dense 16K d=128 3.418 ms on an H100, 3.434 on an H200
# in run32), so its profile takes these fields too (before stop 51 it kept the provisional
# ones for every call: median error 11.9% on run33's 18 timings, against 4.9% now); it keeps
# them for the calls the portable kernels run.
_HOPPER_KERNELS = dict(attn_fwd_efficiency=0.655, attn_bwd_efficiency=0.560,
                       attn_bwd_efficiency_d64=0.495, attn_exp_per_ns=1986.0,
                       attn_tile_overhead_us=2.59, fused_dq_backward=True)
# The fields for the calls the Hopper kernels do not run (runs_hopper_kernels): the
# provisional values, which the 2026-11-24 checks of the portable kernels measured (median
# error 6.0% on an H100, 7.7% on an H200: benchmarks/results/h100, h200/calibration.json).
_PORTABLE_KERNELS = tuple((f.name, f.default) for f in dataclasses.fields(DeviceProfile)
                          if f.name in _HOPPER_KERNELS)
DEVICES: Dict[str, DeviceProfile] = {
    "h100": DeviceProfile(
        name="NVIDIA H100 SXM5 80GB", peak_bf16_tflops=989.4, peak_tf32_tflops=494.7,
        peak_fp32_tflops=66.9, hbm_gbps=3350.0, sram_kib_per_sm=228, num_sms=132,
        **_HOPPER_KERNELS, portable_fields=_PORTABLE_KERNELS,
        # benchmarks/results/h200-hopper, runs of the current kernels on an H100 (dense causal
        # and local(8)|global_blocks(1) causal, 16K, H=16, bf16): dropout 0.1 in form 19 (stop
        # 61), run42-stop61/call2's variants at d=128 and d=64 and the parity suites of
        # run43-stop62, run47-stop66, run48-stop67 and run49-stop68; softcap 30 with the dK/dV
        # factor taken in before dV's product (stop 68), run49's three calls (variants and
        # parity suite); the causal ALiBi with stop 66's defaults (folded rows, the dK/dV output
        # copy), run48's call-1 variants and the parity suites of run48 and run49. The median
        # per score of those samples (tests/test_estimate.py _H100_SOURCES). Dropout's forward
        # ranged 0.36-0.47, its backward 0.45-0.73; softcap's 0.12-0.16 and 0.17-0.49 (0.17-0.20
        # dense, 0.46-0.49 local: one price for both); ALiBi's 0.04-0.12 and -0.08-0.04: its
        # backward costs nothing measurable since stop 65's fold (until stop 66 the price was
        # 0.05 / 0.23). The causal form's: the non-causal ALiBi costs more (about 0.09 forward,
        # 0.08 backward a score on the dense non-causal 16K case: run48 calls 7-8), which these
        # prices leave out.
        option_ps_per_score=(("dropout", 0.38, 0.64), ("softcap", 0.15, 0.33),
                             ("alibi", 0.05, -0.01)),
        calibrated="Hopper kernels (fp16/bf16, d=64/128, blocks of 128): the h200 fit, checked "
                   "on H100 80GB HBM3 2026-12-06, median error 2.1% over 72 timings fitted on "
                   "by neither (h200-hopper/run39-stop57/estimator_check.txt; 1.9% over 40 "
                   "in run43-stop62, 4.9% over 18 in run33-stop51); portable kernels: "
                   "provisional, checked 2026-11-24, median error 6.0% over 136 timings "
                   "(h100/calibration.json); option costs: medians of H100 runs of the "
                   "current kernels, stops 61-68 (docs/estimator.md)"),
    "h200": DeviceProfile(
        name="NVIDIA H200 SXM 141GB", peak_bf16_tflops=989.4, peak_tf32_tflops=494.7,
        peak_fp32_tflops=66.9, hbm_gbps=4800.0, sram_kib_per_sm=228, num_sms=132,
        **_HOPPER_KERNELS, portable_fields=_PORTABLE_KERNELS,
        # benchmarks/results/h200-hopper: the parity runs run15-fused-dq/call6 and
        # run18-dropout-ops/call4 (dense causal and local(8)|global_blocks(1) causal, 16K,
        # d=128, H=16, bf16: softcap 30) and run16-exp2-poly/call1 (softcap at d=128 and d=64);
        # dropout 0.1 in its default draws since run21 (16-bit "quad", 7 Philox rounds):
        # benchmarks/results/h200-parity/run21-quad, call1 and call2 (parity.py --variants at
        # d=128 and d=64) and call3 (the parity suite, d=128); and run22-descending/call5 (the
        # impls timed interleaved after a heat phase: the parity suite for all three, the
        # variants for ALiBi, whose samples are run22's alone since its forward walks rows from
        # the diagonal). The median per score of those samples (docs/estimator.md, "Dropout,
        # softcap and ALiBi"). Dropout's forward ranged 0.36-0.49, its backward 0.70-0.97 at
        # d=128 and 0.45-0.48 at d=64; softcap's backward 0.01-0.56; ALiBi's forward 0.016-0.068,
        # its backward 0.06-0.29. Softcap since the forward's fixed shift (run23): its samples
        # are h200-parity/run23-softcap-shift's (the parity suite, call 2; the d=128 variants of
        # calls 3 and 4; at d=64, where the running max stays, call 2's variants): forward
        # 0.11-0.21, backward -0.37-0.49 (before: 0.20 / 0.29).
        option_ps_per_score=(("dropout", 0.43, 0.75), ("softcap", 0.14, 0.27),
                             ("alibi", 0.04, 0.17)),
        calibrated="fitted to the Hopper kernels on H200 (fused dQ backward): the forward's "
                   "fields to run30's pipeline 2026-12-05, the backward's efficiencies by head "
                   "dim 2026-12-04; out of sample on run30 call 7 median error 1.8% over 40 "
                   "timings (forward 1.4%, forward+backward 2.2%), bf16, d=64/128, 4K-64K "
                   "(benchmarks/results/h200-hopper/run30-kv-split/call8/peers/calibration.json, "
                   "docs/estimator.md); portable kernels (other calls): provisional, checked "
                   "2026-11-24, median error 7.7% over 136 timings (h200/calibration.json)"),
    "a100": DeviceProfile(
        name="NVIDIA A100 SXM4 80GB", peak_bf16_tflops=312.0, peak_tf32_tflops=156.0,
        peak_fp32_tflops=19.5, hbm_gbps=2039.0, sram_kib_per_sm=164, num_sms=108,
        calibrated="not calibrated: H100 efficiencies reused"),
}


def register_device(key: str, profile: DeviceProfile) -> None:
    """Add or replace a named profile, usable as ``estimate(..., device=key)``."""
    if not isinstance(profile, DeviceProfile):
        raise TypeError(f"profile must be a DeviceProfile, got {type(profile).__name__}")
    DEVICES[key.lower()] = profile


def get_device(device: Union[str, DeviceProfile]) -> DeviceProfile:
    """Look up a profile by key (case-insensitive), or pass a DeviceProfile through."""
    if isinstance(device, DeviceProfile):
        return device
    if isinstance(device, str) and device.lower() in DEVICES:
        return DEVICES[device.lower()]
    raise ValueError(f"device must be a DeviceProfile or one of {sorted(DEVICES)}, got {device!r}")


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class KernelCost:
    """One kernel launch of a method: its work, its traffic and its roofline time."""

    name: str
    flops: float
    hbm_bytes: float
    ms: float
    bound: str  # "compute" (matmuls or exponentials) or "memory"


@dataclass(frozen=True)
class MethodCost:
    """A way of computing the attention (ours, dense FlashAttention, standard)."""

    name: str
    kernels: Tuple[KernelCost, ...]
    workspace_bytes: float  # HBM held beyond q, k, v, o and their gradients

    @property
    def flops(self) -> float:
        return float(sum(k.flops for k in self.kernels))

    @property
    def hbm_bytes(self) -> float:
        return float(sum(k.hbm_bytes for k in self.kernels))

    @property
    def predicted_ms(self) -> float:
        return float(sum(k.ms for k in self.kernels))

    @property
    def bound(self) -> str:
        """The bound of the kernels that take most of the time."""
        compute = sum(k.ms for k in self.kernels if k.bound == "compute")
        return "compute" if compute >= self.predicted_ms / 2 else "memory"


@dataclass(frozen=True)
class CostEstimate:
    """Result of :func:`estimate`. ``str()`` gives a table of the three methods.

    Top-level ``flops``, ``hbm_bytes`` and ``predicted_ms`` are those of our kernel;
    ``dense`` and ``standard`` hold the two baselines, with every kernel broken out.
    """

    sparse: MethodCost
    dense: MethodCost
    standard: MethodCost
    nnz: Union[int, float]  # computed block pairs; the mean per batch element for per-batch tables
    dense_nnz: int          # block pairs dense FlashAttention computes (causal triangle skipped)
    density: float          # nnz / grid_blocks, as BlockLayout.density
    grid_blocks: int        # num_heads * nq * nk, the denominator of density
    head_dim: int
    batch: int
    dtype: torch.dtype
    device: DeviceProfile
    backward: bool
    layout_summary: str = field(repr=False)
    # dropout draws: one per computed score in the forward, and again in each backward
    # kernel that computes P (the mask is regenerated, never stored): two (dQ, dK/dV), or one
    # with the fused dQ (DeviceProfile.fused_dq_backward)
    dropout_random_numbers: int = 0
    # the Philox-4x32 calls (7 rounds by default) that make them: one call makes eight 16-bit
    # draws or sixteen 8-bit ones (sparseflash.philox.DROPOUT_BITS when estimated)
    dropout_philox_calls: int = 0
    # options asked for ("dropout", "softcap", "alibi") whose time this device's profile has
    # no measurement of (DeviceProfile.option_ps_per_score): not in predicted_ms
    unpriced_options: Tuple[str, ...] = ()

    @property
    def flops(self) -> float:
        return self.sparse.flops

    @property
    def hbm_bytes(self) -> float:
        return self.sparse.hbm_bytes

    @property
    def predicted_ms(self) -> float:
        return self.sparse.predicted_ms

    @property
    def dense_flops(self) -> float:
        return self.dense.flops

    @property
    def dense_hbm_bytes(self) -> float:
        return self.dense.hbm_bytes

    @property
    def standard_flops(self) -> float:
        return self.standard.flops

    @property
    def standard_hbm_bytes(self) -> float:
        return self.standard.hbm_bytes

    @property
    def speedup_vs_dense(self) -> float:
        return self.dense.predicted_ms / self.sparse.predicted_ms

    @property
    def speedup_vs_standard(self) -> float:
        return self.standard.predicted_ms / self.sparse.predicted_ms

    def to_string(self) -> str:
        pass_name = "forward + backward" if self.backward else "forward"
        dtype_name = str(self.dtype).replace("torch.", "")
        lines = [
            f"estimate: {pass_name}, {dtype_name}, batch {self.batch}, head_dim {self.head_dim}, "
            f"on {self.device.name}",
            f"  {self.layout_summary}: {self.nnz:,} of {self.grid_blocks:,} blocks computed"
            f" (density {self.density:.2%})"
            + (f"; dense FlashAttention computes {self.dense_nnz:,} (causal triangle)"
               if self.dense_nnz != self.grid_blocks else ""),
        ]
        header = (f"  {'method':<22}{'FLOPs':>10}{'HBM bytes':>11}{'FLOP/B':>8}"
                  f"{'workspace':>11}{'bound':>9}{'pred. ms':>11}{'ours faster':>13}")
        lines += [header, "  " + "-" * (len(header) - 2)]
        for method in (self.sparse, self.dense, self.standard):
            intensity = method.flops / method.hbm_bytes if method.hbm_bytes else float("inf")
            speedup = method.predicted_ms / self.sparse.predicted_ms
            lines.append(
                f"  {method.name:<22}{_si(method.flops):>10}{_si(method.hbm_bytes, 'B'):>11}"
                f"{intensity:>8.0f}{_si(method.workspace_bytes, 'B'):>11}{method.bound:>9}"
                f"{method.predicted_ms:>11.3f}{speedup:>12.2f}x")
        priced = list(dict.fromkeys(k.name.split()[1] for k in self.sparse.kernels
                                    if k.name.startswith("option ")))
        if priced:
            lines.append(f"  (included: {', '.join(priced)}, measured per computed score on this "
                         f"device; the standard attention row leaves them out)")
        if self.unpriced_options:
            lines.append(f"  (not in the times: {', '.join(self.unpriced_options)}, not measured "
                         f"on {self.device.name})")
        lines.append(f"  (roofline efficiencies: {self.device.calibrated})")
        return "\n".join(lines)

    __str__ = to_string


def _si(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


# ----------------------------------------------------------------------------- model
class _Roofline:
    """Turns (flops, bytes) of one kernel into a KernelCost on a device."""

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
        self.bytes_per_ms = profile.hbm_gbps * 1e9 * profile.bandwidth_efficiency / 1e3

    def kernel(self, name: str, flops: float, hbm_bytes: float, tflops: float,
               efficiency: float, *, reread_bytes: float = 0.0,
               slowdown: float = 1.0, exps: float = 0.0, tiles: int = 0) -> KernelCost:
        """``reread_bytes`` (part of ``hbm_bytes``) may hit in L2 at ``tile_l2_hit_rate``;
        ``exps`` exponentials run at the profile's ``attn_exp_per_ns`` (compute-bound too);
        ``tiles`` programs each add ``attn_tile_overhead_us``, ``num_sms`` at a time."""
        compute_ms = flops / (tflops * 1e12 * efficiency / 1e3) if flops else 0.0
        rate = self.profile.attn_exp_per_ns
        if exps and rate:
            compute_ms = max(compute_ms, exps / (rate * 1e6))
        memory_ms = (hbm_bytes - reread_bytes * self.profile.tile_l2_hit_rate) / self.bytes_per_ms
        ms = max(compute_ms, memory_ms) * slowdown + self.profile.launch_overhead_us / 1e3
        if tiles:
            ms += tiles / self.profile.num_sms * self.profile.attn_tile_overhead_us / 1e3
        return KernelCost(name, float(flops), float(hbm_bytes), ms,
                          "compute" if compute_ms >= memory_ms else "memory")


def _causal_dense_nnz(layout: BlockLayout) -> int:
    """Block pairs with at least one visible token pair when every block is kept (the
    causal line and the window cut the grid; absolute positions as in BlockLayout)."""
    from .layout import K_LEN, K_POS, NK, NQ, Q_LEN, Q_POS

    b = layout.block_size
    lo = hi = None
    if layout.window is not None:
        lo = -layout.window[0] if layout.window[0] >= 0 else None
        hi = layout.window[1] if layout.window[1] >= 0 else None
    if layout.causal:
        hi = 0 if hi is None else min(hi, 0)
    total = 0
    for s in layout.seqs:
        q_pos, q_len, k_pos, k_len = int(s[Q_POS]), int(s[Q_LEN]), int(s[K_POS]), int(s[K_LEN])
        nq, nk = int(s[NQ]), int(s[NK])
        if lo is None and hi is None:
            total += nq * nk
            continue
        I = q_pos // b + np.arange(nq, dtype=np.int64)                 # absolute query blocks
        q_lo, q_hi = np.maximum(I * b, q_pos), np.minimum((I + 1) * b, q_pos + q_len) - 1
        j_first, j_last = k_pos // b, k_pos // b + nk - 1               # [j_first, j_last]
        k_first, k_last = k_pos, k_pos + k_len - 1                       # present key positions
        last = np.full(nq, j_last) if hi is None else np.minimum(j_last, np.minimum(q_hi + hi, k_last) // b)
        first = np.full(nq, j_first) if lo is None else np.maximum(j_first, np.maximum(q_lo + lo, k_first) // b)
        ok = (last >= first) & ((np.minimum(q_hi + hi, k_last) >= k_first) if hi is not None else True)
        total += int(np.where(ok, last - first + 1, 0).sum())
    return layout.num_heads * total


def _flash_kernels(roof: _Roofline, *, nnz: int, rows: int, kv_rows: int, table_rows: int,
                   kv_table_rows: int, d: int, b: int, e: int, batch: int, tflops: float,
                   backward: bool) -> Tuple[List[KernelCost], float]:
    """Kernels of block-sparse FlashAttention computing ``nnz`` blocks.

    ``rows`` = heads * N query rows, ``kv_rows`` = heads * Nk key rows (K/V are counted per
    query head: each program loads its own tiles), ``table_rows`` = heads * nq forward CSR
    rows and ``kv_table_rows`` = heads * nk backward ones.
    Returns (kernels, workspace bytes).
    """
    p = roof.profile
    bwd_efficiency = (p.attn_bwd_efficiency_d64 if d <= 64 and p.attn_bwd_efficiency_d64 is not None
                      else p.attn_bwd_efficiency)
    tile = b * d * e                      # one Q, K, V, O, dO, dQ, dK or dV tile, bytes
    block_flops = 4.0 * d * b * b         # QK^T and PV of one b x b block
    scores = batch * nnz * b * b          # one exponential each, per kernel that computes P
    fwd_tables = (table_rows * 2 + nnz) * _INDEX_BYTES      # ptr + nfull per row, idx per block
    bwd_tables = (kv_table_rows * 2 + nnz) * _INDEX_BYTES

    fwd = roof.kernel(
        "attn_fwd", batch * nnz * block_flops,
        batch * (rows * d * e * 2          # read Q, write O
                 + rows * _LSE_BYTES       # write LSE
                 + nnz * 2 * tile          # K and V tile per computed block
                 + fwd_tables),
        tflops, p.attn_fwd_efficiency, reread_bytes=batch * nnz * 2 * tile, exps=scores,
        tiles=batch * table_rows)
    kernels = [fwd]
    workspace = batch * rows * _LSE_BYTES
    if backward and p.fused_dq_backward:
        # FLOPs follow the 3.5x convention: the backward is 5 block matmuls (S again, dV, dP,
        # dK, dQ), 2.5x the forward. The statistics prologue reads O, dO and the LSE once and
        # writes delta and lse2; the fused kernel reads K, V and writes dK, dV once per key
        # block, and per computed block reads the Q and dO tiles with their lse2 and delta rows
        # and adds a dQ tile in fp32 (read and written by the copy engine's reduce, in L2
        # mostly). The fp32 accumulator is zeroed before and converted to dQ after.
        acc = rows * d * _ACC_BYTES
        per_block = 2 * tile + 2 * b * _LSE_BYTES + 2 * b * d * _ACC_BYTES   # Q, dO, stats, dQ add
        kernels.append(roof.kernel("attn_bwd_stats", 0.0,
                                   batch * (rows * d * e * 2 + rows * 3 * _LSE_BYTES),
                                   tflops, bwd_efficiency))
        kernels.append(roof.kernel("attn_bwd_dq_zero", 0.0, batch * acc, tflops,
                                   bwd_efficiency))
        kernels.append(roof.kernel(
            "attn_bwd_fused", batch * nnz * 2.5 * block_flops,
            batch * (kv_rows * d * e * 4 + nnz * per_block + bwd_tables),
            tflops, bwd_efficiency, reread_bytes=batch * nnz * per_block,
            exps=scores, tiles=batch * kv_table_rows))
        kernels.append(roof.kernel("attn_bwd_dq_convert", 0.0, batch * (acc + rows * d * e),
                                   tflops, bwd_efficiency))
        workspace += batch * (rows * 2 * _LSE_BYTES + acc)   # delta, lse2, the dQ accumulator
    elif backward:
        # FLOPs follow the 3.5x convention: the backward is 5 block matmuls (S again, dV, dP,
        # dK, dQ), 2.5x the forward. A dQ kernel that recomputes S and dP a second time does
        # more work; that shows up in the calibrated attn_bwd_efficiency, not here.
        # dQ (launched first): per query block, read Q, dO, O, LSE and write dQ, delta and
        # lse2 once (it computes delta = rowsum(dO * O) for the dK/dV kernel); per computed
        # block read the K and V tiles. dQ = dS K: 2 d b^2 per block.
        kernels.append(roof.kernel(
            "attn_bwd_dq", batch * nnz * 0.5 * block_flops,
            batch * (rows * d * e * 4 + rows * 3 * _LSE_BYTES
                     + nnz * 2 * tile
                     + fwd_tables),
            tflops, bwd_efficiency, reread_bytes=batch * nnz * 2 * tile, exps=scores,
            tiles=batch * table_rows))
        # dK/dV: per key block, read K, V and write dK, dV once; per computed block read the
        # Q and dO tiles plus their lse2 and delta rows. S, dV, dP, dK: 8 d b^2 per block.
        kernels.append(roof.kernel(
            "attn_bwd_dkdv", batch * nnz * 2.0 * block_flops,
            batch * (kv_rows * d * e * 4
                     + nnz * (2 * tile + 2 * b * _LSE_BYTES)
                     + bwd_tables),
            tflops, bwd_efficiency,
            reread_bytes=batch * nnz * (2 * tile + 2 * b * _LSE_BYTES), exps=scores,
            tiles=batch * kv_table_rows))
        workspace += batch * rows * 2 * _LSE_BYTES   # delta, lse2
    return kernels, workspace


def _standard_kernels(roof: _Roofline, *, heads: int, n: int, nk: int, d: int, e: int,
                      batch: int, tflops: float, masked: bool,
                      backward: bool) -> Tuple[List[KernelCost], float]:
    """Standard attention (FlashAttention paper, Algorithms 0 and 3), every op one kernel.

    S and P are N x Nk per head in ``dtype``; a sparse or causal layout adds one masking
    pass that reads S and the bool mask and writes S back.
    """
    p = roof.profile
    bh = batch * heads
    nd, nkd, nn = n * d * e, nk * d * e, n * nk * e
    mm = 2.0 * n * nk * d                 # flops of one N x Nk x d matmul
    eff = p.matmul_efficiency
    ops = [("S = QK^T", mm, nd + nkd + nn)]
    if masked:
        ops.append(("S = mask(S)", 0.0, 2 * nn + n * nk * _MASK_BYTES))
    ops += [("P = softmax(S)", 0.0, 2 * nn),
            ("O = PV", mm, nn + nkd + nd)]
    if backward:
        ops += [("dV = P^T dO", mm, nn + nd + nkd),
                ("dP = dO V^T", mm, nd + nkd + nn),
                ("dS = P * (dP - delta)", 0.0, 3 * nn + 2 * nd),  # delta = rowsum(dO * O)
                ("dQ = dS K", mm, nn + nkd + nd),
                ("dK = dS^T Q", mm, nn + nd + nkd)]
    kernels = [roof.kernel(name, bh * f, bh * by, tflops, eff, slowdown=p.eager_slowdown)
               for name, f, by in ops]
    # S and P alive at once (P is kept for the backward pass); backward adds dP and dS.
    workspace = bh * nn * (4 if backward else 2)
    return kernels, workspace


def estimate(layout: BlockLayout, head_dim: int, *, batch: Optional[int] = None,
             dtype: torch.dtype = torch.bfloat16,
             device: Union[str, DeviceProfile] = "h100",
             backward: bool = False, dropout_p: float = 0.0, softcap: float = 0.0,
             alibi: bool = False) -> CostEstimate:
    """Predict FLOPs, HBM traffic and time of attention over ``layout``.

    Args:
        layout: a compiled :class:`~sparseflash.BlockLayout` (``num_heads`` heads).
        head_dim: d, the per-head feature size.
        batch: B; costs are linear in it. Default 1, or, for a layout with one table per
            batch element (``num_seqs > 1``, not packed; e.g. :func:`~sparseflash.topk_layout`),
            its number of tables, the only value it accepts; ``nnz``, ``density`` and
            ``grid_blocks`` are then the means per batch element. A device-built layout's
            tables are copied to the host once (:meth:`~sparseflash.BlockLayout.host`).
        dtype: element type of q, k, v, o: bf16, fp16, or fp32 (fp32 dots, no tf32, in both
            our kernel and eager torch).
        device: a key of :data:`DEVICES` (``"h100"``, ``"h200"``, ``"a100"``, or one added with
            :func:`register_device`) or a :class:`DeviceProfile`.
        backward: count forward plus backward instead of forward only.
        dropout_p: attention dropout; counts its random numbers (``dropout_random_numbers``,
            and ``dropout_philox_calls``: eight 16-bit or sixteen 8-bit draws a call, as
            ``sparseflash.philox.DROPOUT_BITS`` says; block_size**2 per computed block pair and
            batch element, once in the forward and twice more in the backward, once more
            where the device's backward has dQ fused into the dK/dV kernel).
        softcap: sparse_attention's ``softcap`` (0: off).
        alibi: whether ``alibi_slopes`` are passed.

        The time dropout, softcap and ALiBi add comes from measurements on the device
        (``DeviceProfile.option_ps_per_score``, a cost per computed score and pass), added to
        ours and to dense FlashAttention as ``option <name> (forward|backward)`` kernel rows;
        on a profile without them it is left out and ``unpriced_options`` names them.

    Returns:
        A :class:`CostEstimate`; ``flops`` = 4 * head_dim * block_size**2 * nnz * batch for the
        forward pass, 3.5x that with ``backward=True``.
    """
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a BlockLayout (sparseflash.compile a pattern first), "
                        f"got {type(layout).__name__}")
    if int(head_dim) != head_dim or head_dim <= 0:
        raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
    per_batch = layout.num_seqs > 1 and not layout.packed
    if batch is None:
        batch = layout.num_seqs if per_batch else 1
    if int(batch) != batch or batch <= 0:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if per_batch and batch != layout.num_seqs:
        raise ValueError(f"batch: the layout has one table per batch element, {layout.num_seqs} of "
                         f"them; batch must be {layout.num_seqs} (or left unset), got {batch}")
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"dtype must be torch.bfloat16, torch.float16 or torch.float32, got {dtype!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p < 1:
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if (isinstance(softcap, bool) or not isinstance(softcap, (int, float))
            or not math.isfinite(softcap) or softcap < 0):
        raise ValueError(f"softcap must be a finite float >= 0 (0: off), got {softcap!r}")
    if not isinstance(alibi, bool):
        raise ValueError(f"alibi must be True or False (whether alibi_slopes are passed), got {alibi!r}")
    head_dim, batch = int(head_dim), int(batch)
    profile = get_device(device).for_call(layout.block_size, head_dim, dtype)
    e = dtype.itemsize
    roof = _Roofline(profile)
    # sparse_attention runs fp32 dots in full fp32 (no tf32), as eager torch does by default
    tflops = profile.matmul_tflops(dtype, tf32=False)

    h, b = layout.num_heads, layout.block_size
    common = dict(rows=h * layout.seq_len, kv_rows=h * layout.kv_len,
                  table_rows=h * layout.num_q_blocks, kv_table_rows=h * layout.num_kv_blocks,
                  d=head_dim, b=b, e=e, batch=batch, tflops=tflops, backward=backward)
    # per batch element: the mean over the batch's tables
    tables = layout.num_seqs if per_batch else 1
    nnz, dense_nnz = layout.nnz / tables, _causal_dense_nnz(layout) // tables
    grid_blocks = layout.grid_blocks // tables
    sparse_k, sparse_ws = _flash_kernels(roof, nnz=nnz, **common)
    dense_k, dense_ws = _flash_kernels(roof, nnz=dense_nnz, **common)
    options = [name for name, on in (("dropout", dropout_p > 0), ("softcap", softcap > 0),
                                     ("alibi", alibi)) if on]
    prices = {name: (fwd, bwd) for name, fwd, bwd in profile.option_ps_per_score}
    sparse_k += _option_kernels(options, prices, batch * nnz * b * b, backward)
    dense_k += _option_kernels(options, prices, batch * dense_nnz * b * b, backward)
    # Standard attention works on exactly N x Nk scores; it needs a mask unless all pass.
    masked = layout.causal or layout.window is not None or nnz < grid_blocks
    standard_k, standard_ws = _standard_kernels(
        roof, heads=h, n=layout.seq_len, nk=layout.kv_len, d=head_dim, e=e, batch=batch,
        tflops=tflops, masked=masked, backward=backward)
    numbers = int(nnz * b * b * batch * ((2 if profile.fused_dq_backward else 3) if backward
                                         else 1)) if dropout_p > 0 else 0
    return CostEstimate(
        sparse=MethodCost("sparseflash (ours)", tuple(sparse_k), sparse_ws),
        dense=MethodCost("dense FlashAttention", tuple(dense_k), dense_ws),
        standard=MethodCost("standard attention", tuple(standard_k), standard_ws),
        nnz=nnz if per_batch else int(nnz), dense_nnz=dense_nnz, density=layout.density,
        grid_blocks=grid_blocks, head_dim=head_dim,
        batch=batch, dtype=dtype, device=profile, backward=backward,
        layout_summary=(f"layout {layout.seq_len}x{layout.kv_len} tokens, {h} head(s), "
                        f"block {b}{', causal' if layout.causal else ''}"),
        dropout_random_numbers=numbers,
        dropout_philox_calls=numbers // (128 // dropout_variant()[0]) if numbers else 0,
        unpriced_options=tuple(name for name in options if name not in prices),
    )


def _option_kernels(options, prices, scores: float, backward: bool) -> List[KernelCost]:
    """The time each priced option adds over ``scores`` computed scores: a row per pass,
    inside the attention kernels (no launch, FLOPs or traffic of its own)."""
    rows = []
    for name in options:
        if name in prices:
            fwd, bwd = prices[name]
            rows.append(KernelCost(f"option {name} (forward)", 0.0, 0.0, scores * fwd * 1e-9, "compute"))
            if backward:
                rows.append(KernelCost(f"option {name} (backward)", 0.0, 0.0, scores * bwd * 1e-9,
                                       "compute"))
    return rows
