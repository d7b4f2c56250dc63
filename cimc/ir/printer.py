"""The .cir text of names, types, attributes and ops.

cimc/ir/text.py prints whole modules with these; constant data is written by
cimc/ir/constants.py. The syntax is described in docs/ir.md ("Textual form").
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from cimc.ir.module import Module, Op, TensorType

# Words the grammar reserves: a kind or attribute named like one is quoted.
KEYWORDS = frozenset(
    "module input const output loc q splat elided true false inf nan".split()
)
_BARE_VALUE = re.compile(r"[A-Za-z0-9_./\-]+")
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# Characters str.splitlines() breaks at, and surrogates: escaped in quoted names.
_UNSAFE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


def quote(text: str) -> str:
    """`text` as a JSON string literal that stays on one line."""
    quoted = json.dumps(text, ensure_ascii=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def name_text(name: str) -> str:
    """A value or module name, quoted unless it is plain."""
    if _BARE_VALUE.fullmatch(name) and "//" not in name:
        return name
    return quote(name)


def value_ref(name: str) -> str:
    """How the text writes a value: `%name`, quoted if needed (for messages too)."""
    return "%" + name_text(name)


def _word(word: str) -> str:
    """An op kind or attribute name, quoted unless it is plain."""
    return word if _BARE_WORD.fullmatch(word) and word not in KEYWORDS else quote(word)


def _float(value: Any) -> str:
    return repr(float(value))


def type_text(type_: TensorType) -> str:
    """A tensor type as the text writes it: `i8[1,4] q<scale=0.5, zp=0>`."""
    text = f"{type_.dtype}[{','.join(str(d) for d in type_.shape)}]"
    q = type_.quant
    if q is None:
        return text
    if q.axis is None:
        return f"{text} q<scale={_float(q.scale[0])}, zp={q.zero_point[0]}>"
    scales = ", ".join(_float(s) for s in q.scale)
    zps = ", ".join(str(z) for z in q.zero_point)
    return f"{text} q<axis={q.axis}, scale=[{scales}], zp=[{zps}]>"


def _attr(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _float(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list | tuple) and not any(isinstance(v, list | tuple | str)
                                                   for v in value):
        return "[" + ", ".join(_attr(v) for v in value) + "]"
    raise TypeError(f"attribute value {value!r} has no textual form")


def op_text(module: Module, op: Op) -> str:
    """One op statement, without indentation."""
    text = ", ".join(f"%{name_text(v)}" for v in op.outputs)
    text = f"{text} = " if text else ""
    text += f"{_word(op.kind)}({', '.join(f'%{name_text(v)}' for v in op.inputs)})"
    if op.attrs:
        text += " {" + ", ".join(f"{_word(k)}={_attr(v)}" for k, v in op.attrs.items()) + "}"
    if op.outputs:
        text += " : " + ", ".join(type_text(module.values[v]) for v in op.outputs)
    if not op.outputs or op.name != op.outputs[0]:
        text += f" loc({quote(op.name)})"
    return text
