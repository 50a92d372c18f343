"""Summary of a benchmarks/hopper.py run with one --set variant: per case and pass, ours (the
tree's default), the variant, FA4 and cuDNN, and each variant's max|diff| note against ours.

    python ab_summary.py ROWS.jsonl VARIANT_IMPL_NAME
"""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
variant = sys.argv[2]
ms = {(r["case"], r["impl"], r["pass"]): r["ms"] for r in rows}
notes = {(r["case"], r["impl"], r["pass"]): r.get("note", "") for r in rows}


def f(x):
    return f"{x:8.4f}" if x is not None and x == x else "       -"


def ratio(a, b):
    return f(a / b) if a and b and a == a and b == b else "       -"


print(f"{'case':46s} {'pass':7s} {'ours ms':>8s} {'variant':>8s} {'var/ours':>8s} {'fa4/ours':>8s} {'cud/ours':>8s}")
for (case, impl, p), t in ms.items():
    if impl != "ours":
        continue
    old, fa4, cud = (ms.get((case, i, p)) for i in (variant, "fa4", "cudnn"))
    print(f"{case[:46]:46s} {p:7s} {f(t)} {f(old)} {ratio(old, t)} {ratio(fa4, t)} {ratio(cud, t)}")
print()
print("notes of the variant (its outputs against ours):")
for (case, impl, p), note in notes.items():
    if impl == variant:
        print(f"{case[:46]:46s} {p:7s} {note.split('; mean')[0][:120]}")
