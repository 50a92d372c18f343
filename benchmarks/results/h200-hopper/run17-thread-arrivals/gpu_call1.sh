#!/usr/bin/env bash
# run17 call 1: the K/V ring's slots released by every consumer thread (cp.async.mbarrier.arrive
# .noinc, the barriers initialised with the threads' count; this tree) against one elected thread
# after a partition barrier (Gluon's mbarrier.arrive; _old_tree = git archive of 0b00885's
# sparseflash and benchmarks), after a subset of the GPU oracle tests. Forward and forward+backward of hopper.py's 17 cases without
# peers (--quick: 5 cases), then the backward's kernels, two processes per tree, alternating.
cd "$(dirname "$0")/../../../.."
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
PYTHONPATH=. timeout 120 python -m pytest -q -x -p no:cacheprovider tests/test_hopper.py -k "with_and_without_the_fused_dq or three_consumers_equal_two or key_padding_crosses" > $OUT/pytest.txt 2>&1; tail -2 $OUT/pytest.txt
C="dense,dense causal,local(8),dense d=64"
for i in 1 2; do
  for t in old new; do
    R=.; [ $t = old ] && R=_old_tree       # the scripts put their own tree first on sys.path
    PYTHONPATH=$R timeout 75 python $R/benchmarks/hopper.py --no-peers --quick --out $OUT/$t$i > $OUT/$t$i.log 2>&1 || tail -3 $OUT/$t$i.log
    PYTHONPATH=$R timeout 45 python $R/benchmarks/bwd_breakdown.py --variants "hopper fused dq" --fused --iters 10 --cases "$C" --out $OUT/bwd_$t$i > $OUT/bwd_$t$i.log 2>&1
    grep -E "_hopper_dkdv_kernel" $OUT/bwd_$t$i.log | sed "s/^/$t$i /" | cut -c1-40,120-
  done
done
python - <<'PY'
import json, os, glob
out = os.environ["OUT"]
t = {}
for f in sorted(glob.glob(f"{out}/*[12]/hopper.json")):
    run = f.split("/")[-2]
    for r in json.load(open(f))["rows"]:
        if r.get("impl") == "ours" and r.get("pass") in ("fwd", "fwd+bwd"):
            t.setdefault((r["case"], r["pass"]), {})[run] = r["ms"]
lines = ["case | pass | old1 new1 old2 new2 | old/new (mean)"]
for (case, p), v in t.items():
    o = [v.get("old1"), v.get("old2")]; n = [v.get("new1"), v.get("new2")]
    if None in o + n: lines.append(f"{case} {p} {v}"); continue
    lines.append(f"{case[:44]:44s} {p:8s} {o[0]:.3f} {n[0]:.3f} {o[1]:.3f} {n[1]:.3f}  {sum(o)/sum(n):.3f}")
open(f"{out}/summary.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
cd $OUT && rm -f */*.png && tar czf runs.tgz old1 new1 old2 new2 bwd_* *.log && rm -rf old1 new1 old2 new2 bwd_* *.log
