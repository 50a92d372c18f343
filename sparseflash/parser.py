"""Text form of patterns: ``parse(text) -> Pattern``, the inverse of ``str(pattern)``.

Grammar (operators bind as in Python: ``~`` tightest, then ``-``, then ``&``, then ``|``,
binary ones left-associative)::

    expr    := and ('|' and)*
    and     := sub ('&' sub)*
    sub     := unary ('-' unary)*
    unary   := '~' unary | '(' expr ')' | call
    call    := NAME '(' [arg (',' arg)* [',']] ')'
    arg     := [NAME '='] value
    value   := INT | '-' INT | '[' [int (',' int)* [',']] ']' | '$' NAME | expr

``NAME`` is one of a fixed table of primitive names and each maps to its factory in
:mod:`sparseflash.pattern`; nothing else is ever looked up or called, so the text cannot
reach Python. ``$name`` is a parameter, substituted from ``params`` (ints or lists of ints
only; presets use it). ``#`` starts a comment that runs to the end of the line.

Every error is a :class:`~sparseflash.PatternError` whose message names the 0-based
character position and what was expected, followed by the offending line and a caret.
The error also carries ``.position`` (int) and ``.text``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import pattern as _p
from .pattern import Pattern, PatternError

__all__ = ["parse", "MAX_DEPTH", "MAX_NESTING"]

MAX_DEPTH = 200  # depth of the resulting pattern tree (operators, '~', per_head); a flat | or & chain is one level
MAX_NESTING = 100  # parser recursion: parens, '~' and call arguments (<= 4 frames per level)
_MAX_INT_DIGITS = 19  # enough for the factories' bound of 2**62, which they check themselves
_MAX_TEXT = 1 << 20  # characters

Value = Union[int, Tuple[int, ...], Pattern]


# ---------------------------------------------------------------------------- primitive table
@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # "int" | "blocks" (int or list of ints)
    required: bool


@dataclass(frozen=True)
class _Primitive:
    factory: Callable[..., Pattern]
    params: Tuple[_Param, ...] = ()
    variadic_patterns: bool = False  # per_head(p0, p1, ...)


def _req(name, kind="int"):
    return _Param(name, kind, True)


def _opt(name, kind="int"):
    return _Param(name, kind, False)


# The whole vocabulary of the text form; parameter names are the factories' own.
PRIMITIVES: Dict[str, _Primitive] = {
    "dense": _Primitive(_p.dense),
    "local": _Primitive(_p.local, (_req("window"),)),
    "strided": _Primitive(_p.strided, (_req("stride"),)),
    "dilated": _Primitive(_p.dilated, (_req("window"), _req("dilation"))),
    "rows": _Primitive(_p.rows, (_req("blocks", "blocks"),)),
    "columns": _Primitive(_p.columns, (_req("blocks", "blocks"),)),
    "global_blocks": _Primitive(_p.global_blocks, (_req("blocks", "blocks"),)),
    "random": _Primitive(_p.random, (_req("per_row"), _opt("seed"))),
    "butterfly": _Primitive(_p.butterfly, (_opt("factors"),)),
    "fixed": _Primitive(_p.fixed, (_req("stride"), _opt("summary"))),
    "bigbird": _Primitive(_p.bigbird, (_opt("window"), _opt("globals", "blocks"), _opt("random"), _opt("seed"))),
    "longformer": _Primitive(_p.longformer, (_opt("window"), _opt("globals", "blocks"))),
    "per_head": _Primitive(_p.per_head, variadic_patterns=True),
}
# Python's precedence: '-' binds tighter than '&', which binds tighter than '|'.
_BINARY = {
    "|": (1, lambda a, b: a | b),
    "&": (2, lambda a, b: a & b),
    "-": (3, lambda a, b: a - b),
}
_NOT_PARSEABLE = {
    "from_mask": "from_mask holds an array and has no text form; build it in Python",
    "from_fn": "from_fn holds a Python function and has no text form; build it in Python",
}


def _merged_depth(operand: Pattern, depth: int, result: Pattern) -> int:
    """Depth an operand contributes below ``result``: one less when it was flattened into it."""
    merged = isinstance(result, _p._Chain) and type(operand) is type(result)
    return depth - 1 if merged else depth


# ---------------------------------------------------------------------------- errors
def _error(text: str, pos: int, message: str) -> PatternError:
    """PatternError 'message at position N' plus the offending line with a caret under N."""
    pos = max(0, min(pos, len(text)))
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line_end = len(text) if line_end < 0 else line_end
    line = text[line_start:line_end]
    col = pos - line_start
    where = f"position {pos}"
    if "\n" in text:
        where += f" (line {text.count(chr(10), 0, pos) + 1}, column {col})"
    # Keep the excerpt short and printable so the message stays readable for any input.
    lo = max(0, col - 40)
    excerpt = "".join(c if c.isprintable() else "?" for c in line[lo:col + 40])
    prefix = "..." if lo else ""
    err = PatternError(f"{message} at {where}\n  {prefix}{excerpt}\n  {' ' * (len(prefix) + col - lo)}^")
    err.position = pos
    err.text = text
    return err


# ---------------------------------------------------------------------------- tokenizer
class _Tok(NamedTuple):
    kind: str  # "name" | "int" | "param" | "op" (one of ( ) [ ] , = | & - ~) | "end"
    text: str
    pos: int


_OPS = set("()[],=|&-~")


def _describe(tok: _Tok) -> str:
    if tok.kind == "end":
        return "end of text"
    return f"{tok.kind if tok.kind != 'op' else 'symbol'} {tok.text!r}"


def _is_name_start(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_name_char(c: str) -> bool:
    return _is_name_start(c) or ("0" <= c <= "9")


def _tokenize(text: str) -> List[_Tok]:
    toks: List[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif c in _OPS:
            toks.append(_Tok("op", c, i))
            i += 1
        elif "0" <= c <= "9":
            j = i
            while j < n and "0" <= text[j] <= "9":
                j += 1
            if j < n and (_is_name_char(text[j]) or text[j] == "."):
                what = "a float" if text[j] == "." else "a name or number"
                raise _error(text, j, f"expected an integer, got {what} (only ints are allowed)")
            if j - i > _MAX_INT_DIGITS:
                raise _error(text, i, f"integer literal too large (at most {_MAX_INT_DIGITS} digits)")
            toks.append(_Tok("int", text[i:j], i))
            i = j
        elif _is_name_start(c):
            j = i
            while j < n and _is_name_char(text[j]):
                j += 1
            toks.append(_Tok("name", text[i:j], i))
            i = j
        elif c == "$":
            j = i + 1
            if j >= n or not _is_name_start(text[j]):
                raise _error(text, j, "expected a parameter name after '$'")
            while j < n and _is_name_char(text[j]):
                j += 1
            toks.append(_Tok("param", text[i + 1:j], i))
            i = j
        else:
            hint = ""
            if c in "'\"":
                hint = " (strings are not allowed)"
            elif c == ".":
                hint = " (attribute access and floats are not allowed)"
            elif c == ":":
                hint = " (lambdas and slices are not allowed)"
            shown = repr(c)  # escapes control characters
            raise _error(text, i, f"unexpected character {shown}{hint}; expected a pattern, "
                                  "an operator (| & - ~), a bracket or an int")
    toks.append(_Tok("end", "", n))
    return toks


# ---------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str, params: Mapping[str, Union[int, Tuple[int, ...]]]):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.params = params
        self.used_params: set = set()
        self.nesting = 0  # open parens / '~' / call arguments on the parser's stack

    # --- token helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, message: str, tok: Optional[_Tok] = None) -> PatternError:
        return _error(self.text, (tok or self.tok).pos, message)

    def expected(self, what: str) -> PatternError:
        return self.error(f"expected {what}, got {_describe(self.tok)}")

    def at(self, text: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == text

    def take(self, text: str, what: Optional[str] = None) -> _Tok:
        if not self.at(text):
            raise self.expected(what or f"'{text}'")
        tok = self.tok
        self.i += 1
        return tok

    def enter(self, tok: _Tok) -> None:
        """Bound the parser's own recursion (parens, '~' and call arguments each nest)."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(f"expression nested too deeply (more than {MAX_NESTING} levels of "
                             "parentheses, '~' and calls)", tok)

    def check_depth(self, depth: int, tok: _Tok) -> None:
        """Bound the depth of the resulting pattern tree, which every later stage recurses over."""
        if depth > MAX_DEPTH:
            raise self.error(f"pattern too deep (more than {MAX_DEPTH} nested operators)", tok)

    # --- grammar; every pattern rule returns (pattern, tree depth)
    def parse(self) -> Pattern:
        if self.tok.kind == "end":
            raise self.expected("a pattern")
        p, _ = self.expr()
        if self.tok.kind != "end":
            raise self.expected("an operator (| & - ~) or end of text")
        return p

    def expr(self, min_prec: int = 1) -> Tuple[Pattern, int]:
        """Precedence climbing over the binary operators (all left-associative)."""
        left, depth = self.unary()
        while self.tok.kind == "op" and self.tok.text in _BINARY and _BINARY[self.tok.text][0] >= min_prec:
            op_tok = self.tok
            prec, combine = _BINARY[op_tok.text]
            self.i += 1
            right, rdepth = self.expr(prec + 1)
            p = combine(left, right)
            # '|' and '&' chains are flat n-ary nodes: an operand of the same operator is
            # merged into the result, so it adds no level (a | b | c is one level deep)
            depth = 1 + max(_merged_depth(left, depth, p), _merged_depth(right, rdepth, p))
            self.check_depth(depth, op_tok)
            left = p
        return left, depth

    def unary(self) -> Tuple[Pattern, int]:
        tok = self.tok
        if self.at("~"):
            self.i += 1
            self.enter(tok)
            p, depth = self.unary()
            self.nesting -= 1
            self.check_depth(depth + 1, tok)
            return ~p, depth + 1
        if self.at("("):
            self.i += 1
            self.enter(tok)
            p = self.expr()
            self.take(")", "')' to close the '(' at position %d" % tok.pos)
            self.nesting -= 1
            return p
        if tok.kind == "name":
            return self.call()
        if tok.kind == "int" or self.at("-") or self.at("[") or tok.kind == "param":
            raise self.error(f"expected a pattern, got {_describe(tok)}; ints and lists only appear "
                             "as arguments, e.g. local(3)")
        raise self.expected("a pattern (a name such as local(...), '~' or '(')")

    def call(self) -> Tuple[Pattern, int]:
        name_tok = self.tok
        name = name_tok.text
        prim = PRIMITIVES.get(name)
        if prim is None:
            if name in _NOT_PARSEABLE:
                raise self.error(_NOT_PARSEABLE[name])
            raise self.error(f"unknown pattern {name!r}; expected one of {', '.join(PRIMITIVES)}")
        self.i += 1
        open_tok = self.take("(", f"'(' after {name!r} (patterns are calls, e.g. {name}(...))")
        self.enter(open_tok)
        positional: List[Tuple[Value, _Tok, int]] = []
        keywords: Dict[str, Tuple[Value, _Tok, int]] = {}
        while not self.at(")"):
            arg_tok = self.tok
            if arg_tok.kind == "name" and self.toks[self.i + 1].kind == "op" and self.toks[self.i + 1].text == "=":
                key = arg_tok.text
                if prim.variadic_patterns:
                    raise self.error(f"{name}() takes no keyword arguments")
                allowed = [q.name for q in prim.params]
                if key not in allowed:
                    want = ", ".join(allowed) if allowed else "none"
                    raise self.error(f"unknown keyword {key!r} for {name}(); expected one of: {want}")
                if key in keywords:
                    raise self.error(f"keyword {key!r} given twice")
                if allowed.index(key) < len(positional):
                    raise self.error(f"{name}() got {key!r} both by position and by keyword")
                self.i += 2
                keywords[key] = self.value()
            else:
                if keywords:
                    raise self.error("positional argument after a keyword argument")
                positional.append(self.value())
            if self.at(","):
                self.i += 1
            elif not self.at(")"):
                raise self.expected("',' or ')'")
        self.take(")")
        self.nesting -= 1
        return self._apply(name_tok, prim, positional, keywords)

    def value(self) -> Tuple[Value, _Tok, int]:
        """An argument: int, list of ints, $param or a pattern; returns (value, its token, tree depth)."""
        tok = self.tok
        if tok.kind == "int" or self.at("-"):
            return self.int_literal(), tok, 0
        if self.at("["):
            return self.int_list(), tok, 0
        if tok.kind == "param":
            self.i += 1
            if tok.text not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise self.error(f"unknown parameter ${tok.text} (known parameters: {known})", tok)
            self.used_params.add(tok.text)
            return self.params[tok.text], tok, 0
        p, depth = self.expr()
        return p, tok, depth

    def int_literal(self) -> int:
        sign = 1
        if self.at("-"):
            self.i += 1
            sign = -1
        if self.tok.kind != "int":
            raise self.expected("an integer")
        v = sign * int(self.tok.text)
        self.i += 1
        return v

    def int_list(self) -> Tuple[int, ...]:
        open_tok = self.take("[")
        out: List[int] = []
        while not self.at("]"):
            if not (self.tok.kind == "int" or self.at("-")):
                raise self.expected("an integer or ']'")
            out.append(self.int_literal())
            if self.at(","):
                self.i += 1
            elif not self.at("]"):
                raise self.expected("',' or ']' to close the '[' at position %d" % open_tok.pos)
        self.i += 1
        return tuple(out)

    def _apply(self, name_tok: _Tok, prim: _Primitive, positional, keywords) -> Tuple[Pattern, int]:
        name = name_tok.text
        if prim.variadic_patterns:
            if not positional:
                raise self.error(f"{name}() needs at least one pattern", name_tok)
            for v, tok, _ in positional:
                if not isinstance(v, Pattern):
                    raise self.error(f"expected a pattern argument for {name}(), got {type(v).__name__} {v!r}", tok)
            args = [v for v, _, _ in positional]
            depth = 1 + max(d for _, _, d in positional)
            self.check_depth(depth, name_tok)
            return self._call_factory(name_tok, prim, args, {}, {}), depth

        if len(positional) > len(prim.params):
            tok = positional[len(prim.params)][1]
            raise self.error(f"{name}() takes at most {len(prim.params)} argument"
                             f"{'s' if len(prim.params) != 1 else ''}", tok)
        bound: Dict[str, Tuple[Value, _Tok, int]] = {}
        for param, entry in zip(prim.params, positional):
            bound[param.name] = entry
        bound.update(keywords)  # call() has rejected a keyword that repeats a positional
        for param in prim.params:
            if param.required and param.name not in bound:
                raise self.error(f"{name}() is missing its argument {param.name!r}", name_tok)
            if param.name in bound:
                v, tok, _ = bound[param.name]
                if isinstance(v, Pattern):
                    want = "an int" if param.kind == "int" else "an int or a list of ints"
                    raise self.error(f"expected {want} for {name}() argument {param.name!r}, got a pattern", tok)
                if param.kind == "int" and not isinstance(v, int):
                    raise self.error(f"expected an int for {name}() argument {param.name!r}, got a list", tok)
        kwargs = {k: v for k, (v, _, _) in bound.items()}
        toks = {k: tok for k, (_, tok, _) in bound.items()}
        return self._call_factory(name_tok, prim, [], kwargs, toks), 0

    def _call_factory(self, name_tok, prim, args, kwargs, toks) -> Pattern:
        try:
            return prim.factory(*args, **kwargs)
        except (PatternError, ValueError, TypeError) as e:
            # Point at the argument the factory complains about ("window must be >= 0 ...").
            msg = str(e)
            tok = next((t for k, t in toks.items() if msg.startswith((k + " ", k + ":"))), name_tok)
            raise self.error(f"invalid arguments for {name_tok.text}(): {msg}", tok) from None


# ---------------------------------------------------------------------------- public API
def parse(text: Union[str, bytes], params: Optional[Mapping[str, object]] = None) -> Pattern:
    """Parse the text form of a pattern, e.g. ``"local(3) | global_blocks([0, -1]) - ~dense()"``.

    ``parse(str(p)) == p`` for every pattern not built from ``from_mask`` or ``from_fn``.

    Args:
        text: the pattern's text form (``str``; UTF-8 ``bytes`` are decoded). ``#`` comments
            and newlines are allowed.
        params: values for ``$name`` placeholders, each an int or a list of ints.

    Raises:
        PatternError: on any invalid text, naming the 0-based character position (also in
            ``err.position``) and what was expected. Nothing in the text is ever evaluated.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            err = PatternError(f"pattern text is not valid UTF-8 at byte {e.start}")
            err.position, err.text = e.start, ""
            raise err from None
    if not isinstance(text, str):
        raise PatternError(f"pattern text must be a str, got {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise PatternError(f"pattern text is too long ({len(text)} characters, at most {_MAX_TEXT})")
    return _Parser(text, check_params(params or {})).parse()


def parse_value(text: str) -> Union[int, Tuple[int, ...]]:
    """An int (``-3``) or a list of ints (``[0, -1]``, returned as a tuple), e.g. a preset default."""
    parser = _Parser(text, {})
    value = parser.int_list() if parser.at("[") else parser.int_literal()
    if parser.tok.kind != "end":
        raise parser.expected("end of the value")
    return value


def check_params(params: Mapping[str, object]) -> Dict[str, Union[int, Tuple[int, ...]]]:
    """Validate parameter values for ``$name`` placeholders: names are identifiers, values
    ints or lists of ints (returned as tuples)."""
    out: Dict[str, Union[int, Tuple[int, ...]]] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not key or not _is_name_start(key[0]) or not all(map(_is_name_char, key)):
            raise PatternError(f"parameter name {key!r} is not a valid name")
        out[key] = _param_value(key, value)
    return out


def _param_value(key: str, value) -> Union[int, Tuple[int, ...]]:
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))

    if is_int(value):
        return int(value)
    if isinstance(value, (list, tuple)) and all(is_int(x) for x in value):
        return tuple(int(x) for x in value)
    raise PatternError(f"parameter {key!r} must be an int or a list of ints, got {type(value).__name__} {value!r}")
