"""A minimal Gluon kernel with ``warp_specialize`` and no shared memory of its own: each of
three partitions (the default 4 warps, a 4-warp and a 1-warp worker) writes its own slice of
a global buffer. Run under ``compute-sanitizer --tool racecheck`` beside benchmarks/sanitize.py:
hazards reported here come from Triton's warp-specialize dispatch, not from our kernels.

    compute-sanitizer --tool racecheck python benchmarks/sanitize_ws_probe.py
"""
import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl


@gluon.jit
def _fill(out, base, value, N: gl.constexpr, WARPS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    offs = base + gl.arange(0, N, layout)
    gl.store(out + offs, gl.full([N], value, gl.float32, layout))


@gluon.jit
def _ws_kernel(out, N: gl.constexpr):
    gl.warp_specialize([(_fill, (out, 0, 1.0, N, 4)), (_fill, (out, N, 2.0, N, 4)),
                        (_fill, (out, 2 * N, 3.0, N, 1))], [4, 1], [232, 40])


def main():
    out = torch.zeros(3 * 128, device="cuda")
    _ws_kernel[(2,)](out, N=128, num_warps=4)
    torch.cuda.synchronize()
    want = torch.tensor([1.0, 2.0, 3.0], device="cuda").repeat_interleave(128)
    print("ws probe values ok:", bool(torch.equal(out, want)), flush=True)


if __name__ == "__main__":
    main()
