"""Attribute types of the verifier's table: what value an op attribute may hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AttrType:
    """The type of an attribute value: `kind` is one of the keys of _CHECKS."""

    kind: str
    length: int | None = None  # for lists: the required number of elements

    def describe(self) -> str:
        noun = _NOUNS[self.kind]
        if self.length is None:
            return noun
        return f"a list of {self.length} {noun.removeprefix('a list of ')}"

    def accepts(self, value: Any) -> bool:
        if not _CHECKS[self.kind](value):
            return False
        return self.length is None or len(value) == self.length


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


_CHECKS = {
    "int": _is_int,
    "float": _is_number,
    "str": lambda v: isinstance(v, str),
    "flag": lambda v: isinstance(v, bool) or (_is_int(v) and v in (0, 1)),
    "ints": lambda v: isinstance(v, list | tuple) and all(_is_int(x) for x in v),
    "floats": lambda v: isinstance(v, list | tuple) and all(_is_number(x) for x in v),
}
_NOUNS = {
    "int": "an int",
    "float": "a number",
    "str": "a string",
    "flag": "a flag (true/false or 0/1)",
    "ints": "a list of ints",
    "floats": "a list of numbers",
}

INT = AttrType("int")
FLOAT = AttrType("float")
FLAG = AttrType("flag")
STR = AttrType("str")
INTS = AttrType("ints")
FLOATS = AttrType("floats")
PAIR = AttrType("ints", 2)
QUAD = AttrType("ints", 4)
CLAMP = AttrType("floats", 2)  # [lo, hi] in the result's domain
