"""The text form: parse(str(p)) == p, precedence, every error class with its position,
fuzzing (only PatternError ever escapes) and injection attempts (never evaluated)."""
import builtins
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparseflash as sf
from sparseflash import PatternError, parse
from sparseflash.parser import MAX_DEPTH, MAX_NESTING, PRIMITIVES
from pattern_strategies import any_patterns, trees

ROUND_TRIP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------- round trips
@ROUND_TRIP
@given(any_patterns(small=False))
def test_round_trip(p):
    text = str(p)
    q = parse(text)
    assert q == p and hash(q) == hash(p)
    assert str(q) == text


@settings(max_examples=100, deadline=None)
@given(trees(small=True))
def test_round_trip_same_mask(p):
    np.testing.assert_array_equal(parse(str(p)).to_dense(9, 6), p.to_dense(9, 6))


@pytest.mark.parametrize("p", [
    sf.dense(), sf.local(0), sf.strided(1), sf.dilated(0, 1), sf.rows([]), sf.rows(0), sf.columns([-1]),
    sf.global_blocks([0, -1, 5]), sf.random(0), sf.random(3, seed=2**40), sf.butterfly(), sf.butterfly(0),
    sf.fixed(4), sf.fixed(4, 0), sf.fixed(4, 4), sf.bigbird(), sf.bigbird(2, [0, -1], 3, 7), sf.longformer(),
    sf.per_head(sf.dense()), sf.per_head(sf.local(1), ~sf.strided(2) | sf.dense()),
    ~~~sf.dense(), sf.local(1) - sf.local(2) - sf.local(3), sf.local(1) - (sf.local(2) - sf.local(3)),
    (sf.local(1) | sf.local(2)) & (sf.local(3) | sf.local(4)), ~(sf.local(1) & sf.local(2)) - ~sf.dense(),
], ids=str)
def test_round_trip_examples(p):
    assert parse(str(p)) == p


def test_keywords_positional_and_layout():
    assert parse("random(3, seed=2)") == sf.random(3, seed=2) == parse("random(per_row=3, seed=2)") == parse("random(3, 2)")
    assert parse("bigbird(window=3, globals=2, random=3)") == sf.bigbird(window=3, globals=2, random=3)
    assert parse("bigbird(3, [0,-1])") == sf.bigbird(3, [0, -1])
    assert parse("fixed(stride=4, summary=2)") == sf.fixed(4, 2)
    assert parse("rows(blocks=[1, -1,])") == sf.rows([1, -1])
    assert parse("local(3,)") == sf.local(3)
    assert parse("  local (\n 3 )\t|dense()  # trailing comment\n") == sf.local(3) | sf.dense()
    assert parse("rows([- 1])") == sf.rows([-1])
    assert parse(b"local(2)") == sf.local(2)
    assert parse("local($w) | rows($r)", params={"w": 2, "r": [0, -1]}) == sf.local(2) | sf.rows([0, -1])


# ---------------------------------------------------------------------------- precedence
@pytest.mark.parametrize("text,expected", [
    ("local(1) | local(2) & local(3)", sf.local(1) | (sf.local(2) & sf.local(3))),
    ("local(1) & local(2) | local(3)", (sf.local(1) & sf.local(2)) | sf.local(3)),
    ("local(1) & local(2) - local(3)", sf.local(1) & (sf.local(2) - sf.local(3))),
    ("local(1) - local(2) & local(3)", (sf.local(1) - sf.local(2)) & sf.local(3)),
    ("local(1) - local(2) - local(3)", (sf.local(1) - sf.local(2)) - sf.local(3)),
    ("local(1) | local(2) | local(3)", (sf.local(1) | sf.local(2)) | sf.local(3)),
    ("~local(1) - local(2)", (~sf.local(1)) - sf.local(2)),
    ("~local(1) | local(2)", (~sf.local(1)) | sf.local(2)),
    ("~(local(1) | local(2))", ~(sf.local(1) | sf.local(2))),
    ("local(1) - ~local(2)", sf.local(1) - (~sf.local(2))),
    ("((local(1)))", sf.local(1)),
    ("local(1) | (local(2) | local(3))", sf.local(1) | (sf.local(2) | sf.local(3))),
], ids=lambda x: x if isinstance(x, str) else "")
def test_precedence(text, expected):
    assert parse(text) == expected


def test_precedence_agrees_with_python():
    """The same text, evaluated by Python over the factories, gives the same tree."""
    ns = {name: getattr(sf, name) for name in PRIMITIVES}
    for text in ["local(1) | strided(2) & ~rows([0]) - columns(1)", "~local(1) - local(2) - local(3) & dense() | butterfly()",
                 "dense() & local(1) | local(2) & local(3) - ~~local(4)"]:
        assert parse(text) == eval(text, {"__builtins__": {}}, ns)  # trusted test text only


# ---------------------------------------------------------------------------- errors
def error_of(text, **kw):
    with pytest.raises(PatternError) as info:
        parse(text, **kw)
    err = info.value
    assert isinstance(err, ValueError)
    first = str(err).splitlines()[0]
    assert re.search(rf"at position {err.position}\b", first), first
    lines = str(err).splitlines()
    assert len(lines) == 3 and lines[2].strip() == "^"  # the caret line
    return err, first


@pytest.mark.parametrize("text,position,message", [
    ("local(3", 7, "expected ',' or ')'"),
    ("local(3 | dense()", 8, "expected ',' or ')'"),
    ("(local(3)", 9, "expected ')' to close the '(' at position 0"),
    ("local(3))", 8, "expected an operator"),
    ("local(3) local(4)", 9, "expected an operator"),
    ("local(3) |", 10, "expected a pattern"),
    ("", 0, "expected a pattern"),
    ("   ", 3, "expected a pattern"),
    ("~", 1, "expected a pattern"),
    ("dense", 5, "expected '\\(' after 'dense'"),
    ("lokal(3)", 0, "unknown pattern 'lokal'"),
    ("Local(3)", 0, "unknown pattern"),
    ("from_mask(1)", 0, "from_mask .*no text form"),
    ("dense() | from_fn(x)", 10, "from_fn .*no text form"),
    ("local(3.5)", 7, "float"),
    ("local(1e3)", 7, "expected an integer"),
    ("local(0x10)", 7, "expected an integer"),
    ("local('3')", 6, "strings are not allowed"),
    ('local("3")', 6, "strings are not allowed"),
    ("local(3) + dense()", 9, "unexpected character '\\+'"),
    ("local(w=3)", 6, "unknown keyword 'w' for local\\(\\); expected one of: window"),
    ("local(window=3, window=4)", 16, "given twice"),
    ("local(window=3, 4)", 16, "positional argument after a keyword"),
    ("local(3, window=4)", 9, "both by position and by keyword"),
    ("local(1, 2)", 9, "at most 1 argument"),
    ("dilated(1)", 0, "missing its argument 'dilation'"),
    ("local()", 0, "missing its argument 'window'"),
    ("local(-1)", 6, "window must be >= 0"),
    ("dense() | strided(0)", 18, "stride must be >= 1"),
    ("fixed(4, summary=5)", 17, "summary must be <= stride"),
    ("local([1, 2])", 6, "expected an int for local\\(\\) argument 'window', got a list"),
    ("local(dense())", 6, "got a pattern"),
    ("rows(dense())", 5, "got a pattern"),
    ("rows([1, 2)", 10, "expected ',' or ']'"),
    ("rows([1 2])", 8, "expected ',' or ']'"),
    ("rows([a])", 6, "expected an integer or ']'"),
    ("local(-)", 7, "expected an integer"),
    ("local(--1)", 7, "expected an integer"),
    ("local(3) | 4", 11, "expected a pattern, got int"),
    ("[1] | dense()", 0, "expected a pattern"),
    ("per_head()", 0, "at least one pattern"),
    ("per_head(1)", 9, "expected a pattern argument"),
    ("per_head(p=dense())", 9, "no keyword arguments"),
    ("per_head(per_head(dense()))", 0, "nested per-head"),
    ("local(99999999999999999999)", 6, "too large"),
    ("local(4611686018427387905)", 6, "window must be <= 2**62"),
    ("rows([0, -4611686018427387905])", 5, "out of range"),
    ("local($w)", 6, "unknown parameter \\$w"),
    ("local($)", 7, "parameter name after '\\$'"),
    ("dense()\n| local(\n-2)", 17, "line 3, column 0"),
    ("local(1) \x00", 9, "unexpected character '\\\\x00'"),
    ("local(１)", 6, "unexpected character"),  # a full-width digit is not an int
], ids=lambda x: repr(x) if isinstance(x, str) else str(x))
def test_errors_name_position_and_expectation(text, position, message):
    err, first = error_of(text)
    assert err.position == position, first
    assert message in first or re.search(message, first), first  # a plain substring or a regex
    assert err.text == text


@pytest.mark.parametrize("text", [
    "__import__('os').system('x')",
    "__import__(\"os\").system(\"touch /tmp/sparseflash_pwned\")",
    "local(1).__class__",
    "local(1).__class__.__base__.__subclasses__()",
    "dense.__globals__",
    "a.b",
    "lambda: dense()",
    "(lambda i, j: i == j)",
    "[x for x in ()]",
    "exec('1')",
    "eval(\"dense()\")",
    "getattr(dense, 'x')",
    "open('/etc/passwd')",
    "globals()",
    "dense()()",
    "(dense())(1)",
    "local(1)[0]",
    "local(*[1])",
    "local(**{})",
    "import os",
    "dense(); import os",
    "sf.dense()",
    "f'{1}'",
    "local(1 if 1 else 2)",
    "local(True)",
    "butterfly(None)",
    "local(1) or dense()",
    "not dense()",
    "dense() is dense()",
    "local(1) @ dense()",
    "local(1) ^ dense()",
    "local(1) << 2",
    "-dense()",
    "+dense()",
    "local(0o7)",
    "local(1_000)",
    "`dense()`",
    "local(1); dense()",
])
def test_injection_is_an_error_not_a_call(text, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the parser called into Python")

    for name in ("eval", "exec", "compile", "open"):
        monkeypatch.setattr(builtins, name, forbidden)
    error_of(text)


def test_nesting_is_bounded():
    ok = "(" * (MAX_NESTING - 1) + "dense()" + ")" * (MAX_NESTING - 1)
    assert parse(ok) == sf.dense()
    for text in ["(" * 5000 + "dense()" + ")" * 5000, "~" * 5000 + "dense()", "per_head(" * 3000,
                 "local(" * 3000, "(" * 100000, "rows(" * 3000 + "[" * 3000]:
        err, first = error_of(text)
        assert "nested too deeply" in first or "expected" in first
    assert parse("~" * 50 + "dense()") == eval("~" * 50 + "sf.dense()")
    # long operator chains are iterative in the parser, but the tree depth is bounded: a
    # '-' chain nests one level per operator ...
    chain = " - ".join(["dense()"] * (MAX_DEPTH + 1) + ["local(1)"])
    err, first = error_of(chain)
    assert "too deep" in first
    assert parse(" - ".join(["dense()"] * (MAX_DEPTH + 1))) is not None  # MAX_DEPTH operators
    # ... while '|' and '&' chains are flat n-ary nodes, one level at any length
    for op in (" | ", " & "):
        flat = op.join([f"strided({s})" for s in range(1, 5001)])
        assert str(parse(flat)) == flat
    nested = " | ".join(["(dense() & local(1))"] * (MAX_DEPTH + 1))
    assert parse(nested) is not None


# ---------------------------------------------------------------------------- fuzzing
def only_pattern_errors(text, **kw):
    try:
        p = parse(text, **kw)
    except PatternError as e:
        assert isinstance(e.position, int) and 0 <= e.position <= max(len(e.text or ""), 0) + 1
        return None
    assert isinstance(p, sf.Pattern)
    assert parse(str(p)) == p
    return p


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_random_text(text):
    only_pattern_errors(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_fuzz_random_bytes(data):
    try:
        parse(data)
    except PatternError:
        pass


TOKENS = ["dense", "local", "strided", "dilated", "rows", "columns", "global_blocks", "random",
          "butterfly", "fixed", "bigbird", "longformer", "per_head", "window", "globals", "seed",
          "summary", "blocks", "x", "(", ")", "[", "]", ",", "=", "|", "&", "-", "~", "0", "1",
          "3", "-1", "12", " ", "$w", "$zz", "#", "\n", ".", "'", "1.5", "()"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25))
def test_fuzz_token_soup(tokens):
    only_pattern_errors("".join(tokens), params={"w": 2})


@settings(max_examples=300, deadline=None)
@given(any_patterns(small=False), st.data())
def test_fuzz_mutated_valid_text(p, data):
    """Delete, duplicate or replace a character of a valid text."""
    text = str(p)
    i = data.draw(st.integers(0, len(text) - 1))
    kind = data.draw(st.sampled_from(["delete", "duplicate", "replace", "insert"]))
    c = data.draw(st.sampled_from(list("()[],=|&-~ 0a.'$#") + ["\x00", "é"]))
    mutated = {
        "delete": text[:i] + text[i + 1:],
        "duplicate": text[:i] + text[i] + text[i:],
        "replace": text[:i] + c + text[i + 1:],
        "insert": text[:i] + c + text[i:],
    }[kind]
    only_pattern_errors(mutated)


@pytest.mark.parametrize("value", [None, 3, 1.5, ["local(1)"], object()], ids=repr)
def test_non_text_input(value):
    with pytest.raises(PatternError, match="must be a str"):
        parse(value)


def test_bad_params():
    for params, match in [({"w": "3"}, "int or a list"), ({"w": 1.5}, "int or a list"), ({"w": [1, "x"]}, "int or a list"),
                          ({"w": True}, "int or a list"), ({"1w": 2}, "not a valid name"), ({"a b": 2}, "not a valid name")]:
        with pytest.raises(PatternError, match=match):
            parse("local($w)", params=params)
    assert parse("local($w)", params={"w": np.int64(2)}) == sf.local(2)
    assert parse("rows($w)", params={"w": (1, 2)}) == sf.rows([1, 2])


def test_vocabulary_matches_the_factories():
    """The parser's fixed table names exactly the text-expressible factories, with their own
    parameter names, order and defaults-vs-required."""
    import inspect

    expected = set(sf.pattern.__all__) - {"Pattern", "PatternError", "from_mask", "from_fn"}
    assert set(PRIMITIVES) == expected
    for name, prim in PRIMITIVES.items():
        params = list(inspect.signature(getattr(sf, name)).parameters.values())
        if prim.variadic_patterns:
            assert [p.kind for p in params] == [inspect.Parameter.VAR_POSITIONAL]
            continue
        assert [p.name for p in params] == [q.name for q in prim.params], name
        assert [p.default is inspect.Parameter.empty for p in params] == [q.required for q in prim.params], name
