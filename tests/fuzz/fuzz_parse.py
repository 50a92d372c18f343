"""Mutated pattern texts through ``sparseflash.parse``, ``to_dense`` and ``compile``: anything but a
PatternError or ValueError, or a call over 5 s, is reported: ``python tests/fuzz/fuzz_parse.py SEED COUNT``."""
import os, random, sys, time, signal
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import sparseflash as sf
from sparseflash import PatternError
seeds = ["local(3) | global_blocks(1) | strided(64)", "bigbird(window=1, globals=2, random=3, seed=4)",
         "butterfly() & ~local(2)", "per_head([local(1), dense()])", "rows([0, -1]) | columns([1])",
         "random(2, seed=7) - local(0)", "dilated(4, 2)", "fixed(4, 1)", "longformer(2, [0, 5])",
         "(local(1) | dense()) & butterfly()"]
alphabet = "()[]|&~-+*,=. 0123456789abcdefghijklmnopqrstuvwxyz_'\"\\e-1e99"
r = random.Random(int(sys.argv[1]))
bad = 0
def handler(*a): raise TimeoutError
signal.signal(signal.SIGALRM, handler)
for it in range(int(sys.argv[2])):
    s = r.choice(seeds)
    for _ in range(r.randint(1, 4)):
        op = r.random(); i = r.randint(0, len(s))
        if op < 0.4: s = s[:i] + r.choice(alphabet) + s[i:]
        elif op < 0.7: s = s[:i] + s[i + 1:]
        elif op < 0.85: s = s[:i] + r.choice(["99999999999", "-5", "1e9", "None", "__import__", "0", "2**64", "nan", "inf"]) + s[i:]
        else: s = s[:i] + r.choice(seeds) + s[i:]
    signal.alarm(5)
    try:
        p = sf.parse(s)
        str(p)
        try:
            n = r.choice([1, 7, 64, 1000])
            p.to_dense(n, n, 2)
            sf.compile(p, n * 16, block_size=16, num_heads=2)
        except (PatternError, ValueError):
            pass
    except (PatternError, ValueError):
        pass
    except TimeoutError:
        bad += 1; print("TIMEOUT", repr(s), flush=True)
    except Exception as e:
        bad += 1; print("EXC", type(e).__name__, str(e)[:200], repr(s), flush=True)
    finally:
        signal.alarm(0)
print("done bad", bad)
