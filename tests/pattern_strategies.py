"""Hypothesis strategies for random pattern trees, shared by the pattern and parser tests."""
import operator

from hypothesis import strategies as st

import sparseflash as sf


def leaves(small: bool = True):
    """Every text-expressible primitive. ``small`` keeps arguments inside a grid of at least
    4 x 4 blocks (list indices in [-4, 3]) so trees compile; otherwise arguments are wide."""
    big = 2**62  # the factories' bound on ints
    n = st.integers(0, 6) if small else st.integers(0, big)
    pos = st.integers(1, 6) if small else st.integers(1, big)
    idx = st.integers(-4, 3) if small else st.integers(-big, big)
    blocks = st.one_of(n, st.lists(idx, max_size=4))
    seed = st.integers(0, 3) if small else n
    return st.one_of(
        st.just(sf.dense()),
        st.builds(sf.local, n),
        st.builds(sf.strided, pos),
        st.builds(sf.dilated, n, pos),
        st.builds(sf.rows, blocks),
        st.builds(sf.columns, blocks),
        st.builds(sf.global_blocks, blocks),
        st.builds(sf.random, n, seed),
        st.builds(sf.butterfly, st.none() | st.integers(0, 5)),
        st.builds(lambda s, c: sf.fixed(s, min(c, s)), pos, n),
        st.builds(sf.bigbird, n, blocks, n, seed),
        st.builds(sf.longformer, n, blocks),
    )


def trees(small: bool = True, max_leaves: int = 8):
    """Random shared-head pattern trees over | & - ~."""
    return st.recursive(
        leaves(small),
        lambda child: st.one_of(
            st.builds(operator.or_, child, child),
            st.builds(operator.and_, child, child),
            st.builds(operator.sub, child, child),
            st.builds(operator.invert, child),
        ),
        max_leaves=max_leaves,
    )


def any_patterns(small: bool = True):
    """Trees, plus per_head of trees combined with shared trees."""
    per_head = st.lists(trees(small, 4), min_size=1, max_size=3).map(lambda ps: sf.per_head(*ps))
    mixed = st.builds(lambda h, t, op: op(h, t), per_head, trees(small, 4),
                      st.sampled_from([operator.or_, operator.and_, operator.sub]))
    return st.one_of(trees(small), per_head, mixed, per_head.map(operator.invert))
