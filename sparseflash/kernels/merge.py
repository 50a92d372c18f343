"""Merge of two partial attention results over disjoint keys, in place, through their
log-sum-exps (context parallelism's local and remote parts).

One pass over both outputs in fp32: eager torch would take several (casts, weights,
products) over tensors as large as the shard's output, which would cost more than the
copies the split saves.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _merge_kernel(O, L, O2, L2, stride_ob, stride_oh, stride_om, stride_2b, stride_2h, stride_2m,
                  stride_lb, stride_lh, stride_l2b, stride_l2h, num_heads, M,
                  HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_M: tl.constexpr):
    off_b = tl.program_id(1) // num_heads
    off_h = tl.program_id(1) % num_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HEAD_DIM_PAD)
    row_ok = rows < M
    ok = row_ok[:, None] & (cols[None, :] < HEAD_DIM)
    l_ptrs = L + off_b.to(tl.int64) * stride_lb + off_h.to(tl.int64) * stride_lh + rows
    l1 = tl.load(l_ptrs, mask=row_ok, other=float("-inf")).to(tl.float32)
    l2 = tl.load(L2 + off_b.to(tl.int64) * stride_l2b + off_h.to(tl.int64) * stride_l2h + rows,
                 mask=row_ok, other=float("-inf")).to(tl.float32)
    m = tl.maximum(l1, l2)
    m = tl.where(m == float("-inf"), 0.0, m)           # rows without keys in either part
    w1 = tl.exp(l1 - m)
    w2 = tl.exp(l2 - m)
    s = w1 + w2
    inv = tl.where(s > 0, 1.0 / s, 0.0)
    o_ptrs = O + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh \
        + rows[:, None].to(tl.int64) * stride_om + cols[None, :]
    o2_ptrs = O2 + off_b.to(tl.int64) * stride_2b + off_h.to(tl.int64) * stride_2h \
        + rows[:, None].to(tl.int64) * stride_2m + cols[None, :]
    o1 = tl.load(o_ptrs, mask=ok, other=0.0).to(tl.float32)
    o2 = tl.load(o2_ptrs, mask=ok, other=0.0).to(tl.float32)
    o = o1 * (w1 * inv)[:, None] + o2 * (w2 * inv)[:, None]
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=ok)
    lse = tl.where(s > 0, m + tl.log(s), float("-inf"))
    tl.store(l_ptrs, lse.to(L.dtype.element_ty), mask=row_ok)


def merge_(out: torch.Tensor, lse: torch.Tensor, o2: torch.Tensor, l2: torch.Tensor) -> None:
    """``out (B, H, M, d)``, ``lse (B, H, M)`` := the merge of themselves with ``o2, l2`` (same
    shapes), in place. Any strides but a unit one on the last axis."""
    B, H, M, d = out.shape
    if M == 0 or B * H == 0:
        return
    for name, t in (("out", out), ("o2", o2), ("lse", lse), ("l2", l2)):
        if t.stride(-1) != 1:
            raise ValueError(f"merge_: {name} needs a unit stride on its last axis, got {t.stride()}")
    block_m = 32 if d > 128 else 64
    d_pad = max(16, triton.next_power_of_2(d))
    _merge_kernel[(triton.cdiv(M, block_m), B * H)](
        out, lse, o2, l2, out.stride(0), out.stride(1), out.stride(2), o2.stride(0), o2.stride(1),
        o2.stride(2), lse.stride(0), lse.stride(1), l2.stride(0), l2.stride(1), H, M,
        HEAD_DIM=d, HEAD_DIM_PAD=d_pad, BLOCK_M=block_m, num_warps=4)
