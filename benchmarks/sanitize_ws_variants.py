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
handout (``_publish_tile``/``_read_tile`` in sparseflash/kernels/hopper.py); 7: the run-time
tile handout's whole protocol, the slot reused across phases (stop 50): two Q-like buffers, a
[2, 1] slot, ``LAPS`` tiles; the producer waits ``empty[qb]``, all 32 lanes store the tile's
number in slot ``qb``, one lane's ``expect`` and a bulk copy complete ``full[qb]``; each of two
4-warp consumers waits ``full[qb]``, reads the slot, and releases with one arrive on
``empty[qb]`` (count 2), as the forward's run-time tiles and two Q buffers do; 8: mode 7 with a
``gl.thread_barrier()`` after the producer's store (``bar.warp.sync``: every lane's store
before the one lane's arrive; run32's ``publish-warp-barrier.patch``); 9 (stop 52): mode 8
with the slot in global memory (two int32 a CTA after its counter): one lane stores the tile's
number (a replicated store, which Triton predicates to one lane), a ``bar.warp.sync``, then the
one lane's ``expect``; each consumer reads it with a volatile load after its wait. The order is
the mbarrier's (release by the arrive, acquire by the wait, CTA scope, which covers global
memory); racecheck checks shared memory only, so this mode shows what is left in shared
memory, not that the global slot is ordered. Each prints whether the values are right;
racecheck prints its hazards.
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


@gluon.jit
def _publish(slot, v, FENCE: gl.constexpr, GLOBAL: gl.constexpr = False):
    """The tile's number into ``slot`` from all 32 lanes, in a function of its own as the
    kernel's ``_publish_tile`` is (inlined, Triton's barrier analysis puts a ``bar.warp.sync``
    before the next mbarrier operation; across the call it does not, as in the kernel's PTX)."""
    one: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
    if GLOBAL:
        gl.store(slot + gl.arange(0, 1, one), gl.full([1], v, gl.int32, one))
    else:
        slot.store(gl.full([1], v, gl.int32, one))
    if FENCE:
        gl.thread_barrier()


@gluon.jit
def _lap_part(out, desc, tbuf, full, empty, slot, counter, base, value, laps, N: gl.constexpr,
              WARPS: gl.constexpr, FENCE: gl.constexpr, ROLE: gl.constexpr,
              GLOBAL: gl.constexpr = False):
    """Modes 7 and 8: the forward's run-time tile handout over ``laps`` tiles (see the module
    docstring; a run-time count, so the loop is not unrolled, as in the kernel); a consumer adds
    the tile numbers it read, 1 + 2 + ... + laps."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    offs = base + gl.arange(0, N, layout)
    result = gl.full([N], value, gl.float32, layout)
    if ROLE == 2:
        for i in range(laps):
            qb = i % 2
            # the tile's number from a global counter, as the kernel's run-time tiles take it
            # (its result reaches the warp through shared memory and a bar.warp.sync, which is
            # why Triton puts no barrier before the expect below: nothing else orders the
            # store of 31 lanes before the one lane's arrive)
            t = gl.atomic_add(counter + gl.program_id(0), 1)
            mbarrier.wait(empty.index(qb), ((i // 2) & 1) ^ 1)     # a fresh barrier passes
            if GLOBAL:     # the CTA's two slots follow the two counters
                _publish(counter + 2 + gl.program_id(0) * 2 + qb, t + 1, FENCE, True)
            else:
                _publish(slot.index(qb), t + 1, FENCE)
            mbarrier.expect(full.index(qb), desc.block_type.nbytes)
            tma.async_copy_global_to_shared(desc, [0, 0, 0, 0], full.index(qb),
                                            tbuf.index(qb).reshape(desc.block_type.shape))
    else:
        every: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
        for i in range(laps):
            qb = i % 2
            mbarrier.wait(full.index(qb), (i // 2) & 1)
            if GLOBAL:
                g = counter + 2 + gl.program_id(0) * 2 + qb + gl.arange(0, 1, every)
                result = result + gl.max(gl.load(g, volatile=True), 0).to(gl.float32)
            else:
                result = result + gl.max(slot.index(qb).load(every), 0).to(gl.float32)
            mbarrier.arrive(empty.index(qb))
    gl.store(out + offs, result)


@gluon.jit
def _laps_kernel(out, desc, counter, laps, N: gl.constexpr, FENCE: gl.constexpr,
                 GLOBAL: gl.constexpr = False):
    ROWS: gl.constexpr = desc.block_type.shape[2]
    COLS: gl.constexpr = desc.block_type.shape[3]
    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([ROWS, COLS], desc.dtype)
    tbuf = gl.allocate_shared_memory(desc.dtype, [2, ROWS, COLS], tile_layout)
    full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    slot = gl.allocate_shared_memory(gl.int32, [2, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    for i in gl.static_range(2):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)          # both consumers release a buffer
    gl.warp_specialize([(_lap_part, (out, desc, tbuf, full, empty, slot, counter, 0, 1.0, laps, N, 4, FENCE, 0, GLOBAL)),
                        (_lap_part, (out, desc, tbuf, full, empty, slot, counter, N, 2.0, laps, N, 4, FENCE, 1, GLOBAL)),
                        (_lap_part, (out, desc, tbuf, full, empty, slot, counter, 2 * N, 3.0, laps, N, 1, FENCE, 2, GLOBAL))],
                       [4, 1], [232, 40])


LAPS = 6


def main():
    mode = int(sys.argv[1])
    out = torch.zeros(3 * 128, device="cuda")
    t = torch.randn(1, 1, 64, 64, device="cuda", dtype=torch.bfloat16)
    block = [1, 1, 64, 64]
    desc = TensorDescriptor(t, list(t.shape), list(t.stride()), block,
                            gl.NVMMASharedLayout.get_default_for(block, gl.bfloat16))
    if mode in (7, 8, 9):
        # one counter a CTA, then (mode 9) two slots a CTA
        counter = torch.zeros(2 + 4, device="cuda", dtype=torch.int32)
        _laps_kernel[(2,)](out, desc, counter, LAPS, N=128, FENCE=mode >= 8, GLOBAL=mode == 9,
                           num_warps=4)
        added = LAPS * (LAPS + 1) // 2                 # both consumers read 1 + 2 + ... + LAPS
        consumers = (1.0 + added, 2.0 + added)
    else:
        _ws_kernel[(2,)](out, desc, N=128, MODE=mode, num_warps=4)
        consumers = (1.0 + (10.0 if mode in (3, 5, 6) else 0.0), 2.0)
    torch.cuda.synchronize()
    want = torch.tensor([*consumers, 3.0], device="cuda").repeat_interleave(128)
    print(f"ws variant {mode} values ok:", bool(torch.equal(out, want)), flush=True)


if __name__ == "__main__":
    main()
