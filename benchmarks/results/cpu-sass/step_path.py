"""The instructions a warp issues in one full (unmasked) step of the Hopper dK/dV kernel's
consumer loop, from the sm_90 SASS that this machine's Triton compiles (no GPU needed):
    PYTHONPATH=. python benchmarks/results/cpu-sass/step_path.py [FLAGS_JSON ...]
Each FLAGS_JSON overrides the kernel's constexprs (tests/test_hopper.py ``_COMPILE``); the
default is the launch's d=128 bf16 non-causal fused-dQ build; ``{"_which": "fwd", ...}`` counts
the forward's step instead (the launch's d=128 build by default); ``"_d": 64`` compiles for head
dim 64 (give that launch's flags: BLOCK_M, DQ_ROWS, KV_REGS). The step loop is the smallest
loop holding wgmma and exponentials; a full step skips the blocks that an in-loop forward
branch jumps over when they hold the masking's selects (FSEL) and no exponential or product;
other branches count as not taken (the forward's conditional rescale counts its multiplies,
which a warp whose rows kept their max skips); the out-of-line retry blocks
of the mbarrier waits are not taken when the data is there."""
import collections
import json
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../..")
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)
import test_hopper as th  # noqa: E402
from benchmarks import sass_loops  # noqa: E402

DEFAULT = dict(FUSED_DQ=True, NUM_STAGES=2, CONSUMER_REGS=240, STATS_TMA=1, ROWS_LATE=1,
               DQ_ROWS=False, KV_REGS=0)
# the forward's launch at d=128 (two consumers, persistent with run-time tiles and two Q buffers)
DEFAULT_FWD = dict(PERSISTENT=True, DYNAMIC=1, OVERLAP_PV=True, RESCALE=8.0, KV_SPLIT=True, Q_BUFS=2,
                   OUT_TMA=True, NUM_STAGES=2)
GROUPS = {
    "wgmma (HGMMA, WARPGROUP)": lambda o: o in ("HGMMA", "WARPGROUP"),
    "per-score fp (FFMA FMNMX MUFU FADD FMUL F2FP FSEL)": lambda o: o in (
        "FFMA", "FMNMX", "MUFU", "FADD", "FMUL", "F2FP", "FSEL"),
    "uniform datapath (U*, R2UR): descriptors, phases": lambda o: o.startswith("U") or o in ("R2UR", "S2UR"),
    "shared/local/global memory": lambda o: o in ("LDS", "STS", "STSM", "LDSM", "LDL", "STL", "LDG", "STG", "LDC"),
    "barriers, fences, mbarriers, branches": lambda o: o in (
        "BAR", "SYNCS", "MEMBAR", "FENCE", "BRA", "NOP", "ELECT", "VOTEU", "VOTE"),
}


def full_steps(sass):
    """(loop size, full-step path) of each step loop, in code order: the innermost loops holding
    wgmma and exponentials, one a consumer warpgroup (they compile apart), two with the split
    loops (ROWS_LATE bit 2: the full steps' loop, then the masked steps')."""
    body, labels = sass_loops.instructions(sass)
    body = [re.sub(r"\s+", " ", line.strip()) for line in body]
    inner = sass_loops.innermost(sass_loops.step_loops(body, labels, through_exit=False))
    out = []
    for a, b in inner:
        keep = [True] * (b - a + 1)
        for i in range(a, b + 1):
            m = re.search(r"@!?P\d BRA `\((\.L_x_\d+)\)", body[i])
            skipped = body[i + 1:labels[m.group(1)]] if m else []
            if (m and i < labels[m.group(1)] <= b and any(" FSEL " in x for x in skipped)
                    and not any("MUFU" in x or "HGMMA" in x for x in skipped)):
                for j in range(i + 1, labels[m.group(1)]):
                    keep[j - a] = False
        out.append((b - a + 1, [x for x, k in zip(body[a:b + 1], keep) if k]))
    return out


def opcode(line):
    m = re.match(r"^/\*[0-9a-f]+\*/ (?:@!?U?P\w+ )?([A-Z][A-Z0-9_]*)", line)
    return m.group(1) if m else "?"


for arg in sys.argv[1:] or ["{}"]:
    given = json.loads(arg)
    which = given.pop("_which", "dkdv")
    d = given.pop("_d", 128)
    flags = dict(DEFAULT if which == "dkdv" else DEFAULT_FWD, **given)
    sass = th.compiled_in_fresh_process(th._COMPILE, json.dumps([which, d, "bf16", flags]), "raw")
    print(f"{which} d={d} flags {json.dumps(flags)}")
    for wg, (size, path) in enumerate(full_steps(sass)):
        counts = collections.Counter(opcode(x) for x in path)
        print(f"  step loop {wg} ({size} instructions): a full step issues {len(path)} a warp")
        for name, test in GROUPS.items():
            ops = {o: n for o, n in counts.items() if test(o)}
            print(f"    {name:52s} {sum(ops.values()):4d}  "
                  + " ".join(f"{o} {n}" for o, n in sorted(ops.items(), key=lambda x: -x[1])))
        grouped = {o for o in counts if any(t(o) for t in GROUPS.values())}
        rest = {o: n for o, n in counts.items() if o not in grouped}
        print(f"    {'integer and address arithmetic, other':52s} {sum(rest.values()):4d}  "
              + " ".join(f"{o} {n}" for o, n in sorted(rest.items(), key=lambda x: -x[1])))
