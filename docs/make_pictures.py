"""Regenerate the ASCII pictures in the docs with sparseflash's own ``BlockLayout.to_string``.

A picture in a Markdown file is the block between two markers::

    <!-- picture: local(1) | columns(0); nq=12 nk=12 causal -->
    ...generated, do not edit...
    <!-- end picture -->

Before the ``;`` is a pattern in the text form, or ``@name`` for one of the Python-built
examples in ``EXAMPLES`` (``from_mask``/``from_fn`` have no text form). After it: ``nq=`` and
``nk=`` grid sizes in blocks (default 12 x 12), ``causal``, ``seq=`` / ``kv=`` lengths in tokens
(default nq*16 / nk*16, block size 16), and ``head=`` for per-head patterns.

    python docs/make_pictures.py          # rewrite the pictures in docs/*.md
    python docs/make_pictures.py --check  # exit 1 if any picture is stale (the tests run this)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the source tree's package, installed or not
import sparseflash as sf  # noqa: E402

BLOCK = 16
MARKER = re.compile(r"(<!-- picture: (?P<spec>.*?) -->\n)(?P<body>.*?)(<!-- end picture -->)", re.S)

EXAMPLES = {
    # a hand-drawn block mask: an "X"
    "mask_x": lambda: sf.from_mask(np.eye(8, dtype=bool) | np.eye(8, dtype=bool)[::-1]),
    # fn(i, j) on broadcast arrays: key blocks on the same anti-diagonal class mod 3
    "fn_mod3": lambda: sf.from_fn(lambda i, j: (i + j) % 3 == 0),
}


def render(spec: str) -> str:
    text, _, options = spec.partition(";")
    opts = dict(nq="12", nk=None, seq=None, kv=None, head="0", causal=None)
    for item in options.split():
        key, _, value = item.partition("=")
        if key not in opts:
            raise ValueError(f"unknown picture option {key!r} in {spec!r}")
        opts[key] = value or "1"
    nq = int(opts["nq"])
    nk = int(opts["nk"] or nq)
    seq = int(opts["seq"] or nq * BLOCK)
    kv = int(opts["kv"] or nk * BLOCK)
    text = text.strip()
    pattern = EXAMPLES[text[1:]]() if text.startswith("@") else sf.parse(text)
    heads = pattern.num_heads or 1
    layout = sf.compile(pattern, seq, kv_len=kv, block_size=BLOCK, causal=bool(opts["causal"]),
                        num_heads=heads)
    picture = layout.to_string(width=2 * max(nq, nk), head=int(opts["head"]))
    caption = (f"{text}: {nq}x{nk} blocks" + (", causal" if opts["causal"] else "")
               + (f", seq_len {seq}, kv_len {kv} (block {BLOCK})" if opts["seq"] or opts["kv"] else "")
               + (f", head {opts['head']}" if heads > 1 else "")
               + f", density {layout.density:.0%}")
    body = "\n".join(picture.splitlines()[:-1])  # the legend line is the same everywhere
    return f"```text\n{caption}\n{body}\n```\n"


def update(path: Path) -> str:
    source = path.read_text()
    return MARKER.sub(lambda m: m.group(1) + render(m.group("spec")) + m.group(4), source)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a picture is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted(DOCS.glob("*.md")):
        new = update(path)
        if new != path.read_text():
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"stale pictures in {', '.join(stale)}: run python docs/make_pictures.py", file=sys.stderr)
        return 1
    print(("checked" if args.check else "updated") + f" pictures in {DOCS}"
          + (f" (rewrote {', '.join(stale)})" if stale and not args.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
