"""The loops of an ``nvdisasm -c`` listing (sm_90 SASS), for the CPU checks of the Hopper kernels'
machine code: tests/test_hopper.py's compile script (``_COMPILE``, "sass" mode) and
benchmarks/results/cpu-sass/step_path.py both read a kernel's step loops through these.

A loop is a branch back to an earlier label. The step loops of a Gluon attention kernel are the
loops that hold both wgmma (``HGMMA``) and exponentials (``MUFU.EX2``); a warp-specialised
kernel has one per consumer partition (two with the dK/dV kernel's split loops)."""
import re

_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+\S")
_BRANCH = re.compile(r"BRA `\((\.L_x_\d+)\)")


def instructions(sass: str):
    """``(body, labels)``: the listing's instruction lines in code order, and each label's
    position in ``body`` (the index of the instruction it precedes)."""
    body, labels = [], {}
    for line in sass.splitlines():
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(body)
        elif _INSTRUCTION.match(line):
            body.append(line)
    return body, labels


def back_edges(body, labels):
    """Every branch back to an earlier label (or to itself), as ``(first, last)`` positions in
    ``body``: the loop runs ``body[first:last + 1]``."""
    edges = []
    for i, line in enumerate(body):
        m = _BRANCH.search(line)
        if m and labels.get(m.group(1), i + 1) <= i:
            edges.append((labels[m.group(1)], i))
    return edges


def step_loops(body, labels, *, through_exit: bool = True):
    """The loops holding wgmma and exponentials, ``(first, last)`` in code order.
    ``through_exit=False`` leaves out a region that contains an ``EXIT`` (a wait's out-of-line
    retry block that branches back to its place, spanning the kernel's end)."""
    out = []
    for a, b in back_edges(body, labels):
        text = body[a:b + 1]
        if not (any("HGMMA" in x for x in text) and any("MUFU.EX2" in x for x in text)):
            continue
        if not through_exit and any(" EXIT" in x for x in text):
            continue
        out.append((a, b))
    return out


def innermost(loops):
    """The loops of ``loops`` (``(first, last)`` pairs) that contain no other of them."""
    return [(a, b) for a, b in loops
            if not any(a <= a2 and b2 <= b and (a2, b2) != (a, b) for a2, b2 in loops)]
