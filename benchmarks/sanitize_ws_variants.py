"""Where racecheck's warp-specialize hazards start: the minimal probe of
``sanitize_ws_probe.py`` (0 hazards) grown step by step towards the Hopper kernels' shape.

    compute-sanitizer --tool racecheck python benchmarks/sanitize_ws_variants.py MODE

MODE 1: shared memory allocated before ``warp_specialize`` and handed to the partitions
(unused); 2: and an mbarrier initialised there too (unused); 3: the 1-warp partition writes
the shared buffer and arrives on the mbarrier, the default partition waits and reads it (the
kernels' producer/consumer handshake, in the generic proxy); 4: no mbarrier use, only a
barrier among the default partition's warps (``gl.thread_barrier()``, PTX ``bar.sync 0, 128``,
which the handshake of mode 3 also emits before its wait); 5: mode 3's handshake with the
phase completed by a TMA copy's bytes (``mbarrier.expect`` and a bulk copy into a second
buffer, no plain arrive), the forward's Q handshake; 6: mode 5 with the value in a one-int32
slot of a [2, 1] buffer, stored and read in the layouts of the forward's run-time tile
handout (``_publish_tile``/``_read_tile`` in sparseflash/kernels/hopper.py). Each prints whether
the values are right; racecheck prints its hazards.
"""
import sys

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor


@gluon.jit
def _part(out, buf, bar, desc, tbuf, slot, base, value, N: gl.constexpr, WARPS: gl.constexpr,
          MODE: gl.constexpr, ROLE: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    offs = base + gl.arange(0, N, layout)
    result = gl.full([N], value, gl.float32, layout)
    if MODE == 4:
        if ROLE == 0:
            gl.thread_barrier()          # a barrier among the default partition's warps only
    if MODE == 3:
        if ROLE == 2:
            buf.store(gl.full([N], 10.0, gl.float32, layout))
            mbarrier.arrive(bar, count=1)
        if ROLE == 0:
            mbarrier.wait(bar, 0)
            result = result + buf.load(layout)
    if MODE == 5 or MODE == 6:
        # mode 3's handshake, its phase completed by the copy's bytes; the value in buf (5) or
        # in a one-int32 slot in the tile handout's layouts (6)
        if ROLE == 2:
            if MODE == 5:
                buf.store(gl.full([N], 10.0, gl.float32, layout))
            else:
                one: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
                slot.index(1).store(gl.full([1], 10, gl.int32, one))
            mbarrier.expect(bar, desc.block_type.nbytes)
            tma.async_copy_global_to_shared(desc, [0, 0, 0, 0], bar, tbuf)
        if ROLE == 0:
            mbarrier.wait(bar, 0)
            if MODE == 5:
                result = result + buf.load(layout)
            else:
                every: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
                result = result + gl.max(slot.index(1).load(every), 0).to(gl.float32)
    gl.store(out + offs, result)


@gluon.jit
def _ws_kernel(out, desc, N: gl.constexpr, MODE: gl.constexpr):
    smem_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    buf = gl.allocate_shared_memory(gl.float32, [N], smem_layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    tbuf = gl.allocate_shared_memory(desc.dtype, desc.block_type.shape, desc.layout)
    slot = gl.allocate_shared_memory(gl.int32, [2, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    if MODE >= 2:
        mbarrier.init(bar, count=1)
    gl.warp_specialize([(_part, (out, buf, bar, desc, tbuf, slot, 0, 1.0, N, 4, MODE, 0)),
                        (_part, (out, buf, bar, desc, tbuf, slot, N, 2.0, N, 4, MODE, 1)),
                        (_part, (out, buf, bar, desc, tbuf, slot, 2 * N, 3.0, N, 1, MODE, 2))],
                       [4, 1], [232, 40])


def main():
    mode = int(sys.argv[1])
    out = torch.zeros(3 * 128, device="cuda")
    t = torch.randn(1, 1, 64, 64, device="cuda", dtype=torch.bfloat16)
    block = [1, 1, 64, 64]
    desc = TensorDescriptor(t, list(t.shape), list(t.stride()), block,
                            gl.NVMMASharedLayout.get_default_for(block, gl.bfloat16))
    _ws_kernel[(2,)](out, desc, N=128, MODE=mode, num_warps=4)
    torch.cuda.synchronize()
    want = torch.tensor([1.0 + (10.0 if mode in (3, 5, 6) else 0.0), 2.0, 3.0],
                        device="cuda").repeat_interleave(128)
    print(f"ws variant {mode} values ok:", bool(torch.equal(out, want)), flush=True)


if __name__ == "__main__":
    main()
