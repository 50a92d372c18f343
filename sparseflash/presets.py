"""Named presets: patterns from the literature, stored as text files in ``patterns/``.

Each ``patterns/<name>.sf`` file is the pattern's text form (see :mod:`sparseflash.parser`)
after a header of ``#`` lines. The header says where the pattern comes from and declares
its parameters, one per line::

    # param window = 3    key blocks on each side of the diagonal

A parameter has a name, a default (an int or a list of ints such as ``[0, -1]``) and a
description (the rest of the line). The text refers to it as ``$window``. Parameters are
substituted as values by the parser, never spliced into the text, so an override can only
ever be an int or a list of ints.

The files ship inside the wheel as package data of ``sparseflash._presets``; in a source
tree without an install they are read from the repository's ``patterns/`` folder.
"""
from __future__ import annotations

import functools
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

from .parser import check_params, parse, parse_value
from .pattern import Pattern, PatternError

__all__ = ["Param", "Preset", "presets", "load", "describe"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PARAM_LINE = re.compile(rf"^#\s*param\s+(?P<name>{_NAME})\s*=\s*(?P<value>-?\d+|\[[^\]]*\])\s*(?P<doc>.*)$")
_SUFFIX = ".sf"

ParamValue = Union[int, Tuple[int, ...]]


@dataclass(frozen=True)
class Param:
    """A preset parameter: ``# param <name> = <default>  <description>``."""

    name: str
    default: ParamValue
    description: str

    def __str__(self) -> str:
        default = self.default if isinstance(self.default, int) else list(self.default)
        return f"{self.name} = {default}" + (f": {self.description}" if self.description else "")


@dataclass(frozen=True)
class Preset:
    """One preset file: its name, header comment, parameters and text form."""

    name: str
    title: str  # first header line
    header: str  # every header line, without the leading '# ' (parameter lines included)
    params: Tuple[Param, ...]
    source: str  # the whole file
    path: str

    @property
    def text(self) -> str:
        """The pattern's text form with ``$name`` placeholders (comment lines removed)."""
        body = [ln.split("#", 1)[0] for ln in self.source.splitlines()]
        return " ".join(" ".join(body).split())

    @property
    def defaults(self) -> Dict[str, ParamValue]:
        return {p.name: p.default for p in self.params}

    def pattern(self, **params) -> Pattern:
        """The pattern with the defaults overridden by ``params`` (ints or lists of ints)."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            known = ", ".join(p.name for p in self.params) or "none"
            raise PatternError(f"preset {self.name!r} has no parameter {unknown[0]!r} (its parameters: {known})")
        values = dict(self.defaults)
        values.update(check_params(params))
        try:
            return parse(self.source, params=values)
        except PatternError as e:
            err = PatternError(f"preset {self.name!r} ({self.path}): {e}")
            err.position, err.text = getattr(e, "position", None), getattr(e, "text", None)
            raise err from None

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.title}"]
        lines += ["  " + ln for ln in self.header.splitlines()[1:]
                  if not ln.startswith("param ") and ln.strip()]
        if self.params:
            lines.append("parameters (override with load(name, key=value)):")
            width = max(len(f"{p.name} = {p.default}") for p in self.params)
            for p in self.params:
                default = p.default if isinstance(p.default, int) else list(p.default)
                lines.append(f"  {f'{p.name} = {default}':<{width}}  {p.description}".rstrip())
        lines.append(f"text: {self.text}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- files
def _preset_files() -> Dict[str, Tuple[str, str]]:
    """name -> (file text, where it came from), from the installed package data, or from the
    repository's patterns/ folder when running from a source tree."""
    try:
        from importlib.resources import files

        root = files("sparseflash._presets")
        entries = [(e.name, e) for e in root.iterdir() if e.name.endswith(_SUFFIX)]
        out = {name[: -len(_SUFFIX)]: (e.read_text(encoding="utf-8"), f"sparseflash._presets/{name}")
               for name, e in entries}
        if out:
            return out
    except ModuleNotFoundError:
        pass
    folder = Path(__file__).resolve().parent.parent / "patterns"
    return {p.stem: (p.read_text(encoding="utf-8"), str(p)) for p in sorted(folder.glob("*" + _SUFFIX))}


def _read_preset(name: str, source: str, path: str) -> Preset:
    if not re.fullmatch(_NAME, name):
        raise PatternError(f"preset file {path}: {name!r} is not a valid preset name")
    header: List[str] = []
    for line in source.splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        header.append(line)
    params: Dict[str, Param] = {}
    for line in header:
        if not re.match(r"^#\s*param\b", line):
            continue
        m = _PARAM_LINE.match(line.rstrip())
        if m is None:
            raise PatternError(f"preset file {path}: bad parameter line {line!r}; expected "
                               "'# param <name> = <int or [ints]>  <description>'")
        key = m["name"]
        if key in params:
            raise PatternError(f"preset file {path}: parameter {key!r} declared twice")
        params[key] = Param(key, _literal(m["value"], path, key), m["doc"].strip())
    text = [re.sub(r"^#\s?", "", ln) for ln in header]
    return Preset(name=name, title=text[0].strip() if text else name, header="\n".join(text),
                  params=tuple(params.values()), source=source, path=path)


def _literal(value: str, path: str, key: str) -> ParamValue:
    try:
        return parse_value(value)
    except PatternError as e:
        raise PatternError(f"preset file {path}: parameter {key!r} has a bad default {value!r}: "
                           f"{str(e).splitlines()[0]}") from None


@functools.lru_cache(maxsize=1)
def _index() -> Dict[str, Preset]:
    return {name: _read_preset(name, src, path) for name, (src, path) in sorted(_preset_files().items())}


# ---------------------------------------------------------------------------- public API
def presets() -> List[str]:
    """Names of the available presets, sorted."""
    return list(_index())


def describe(name: str) -> Preset:
    """The :class:`Preset` called ``name`` (``str()`` of it is a readable description)."""
    index = _index()
    if name not in index:
        raise PatternError(f"unknown preset {name!r}; available presets: {', '.join(index)}")
    return index[name]


def load(name: str, **params) -> Pattern:
    """The preset ``name`` as a :class:`~sparseflash.Pattern`, with parameters overridden.

    Example: ``load("bigbird", window=3, globals=2)``. Values are ints or lists of ints;
    an unknown preset or parameter raises :class:`~sparseflash.PatternError` naming it.
    """
    return describe(name).pattern(**params)


class _CallableModule(types.ModuleType):
    """This module, callable: ``sparseflash.presets`` is the module (``import
    sparseflash.presets as m; m.load(...)``) and ``sparseflash.presets()`` still lists the
    presets, as it did when the package bound that name to the function."""

    def __call__(self) -> List[str]:
        return presets()


sys.modules[__name__].__class__ = _CallableModule
