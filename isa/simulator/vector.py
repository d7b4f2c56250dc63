"""Semantics of vector arithmetic, conversion, requantization, lookup and reductions.

Every operation works on [batch, n] arrays at once. Results of i8/u8
operations saturate to their type; i32 results wrap modulo 2^32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cimc.isa.simulator.memory import ELEMENT_DTYPES, MemoryFault
from cimc.isa.simulator.registry import semantic
from cimc.reference import requant

Ops = tuple[int, ...]


def fit(values: np.ndarray, element: str) -> np.ndarray:
    """int64 values as `element`: saturated for i8/u8, wrapped for i32."""
    if element == "i32":
        return values.astype(np.int32)
    lo, hi = _BOUNDS[element]  # requant.saturate, without looking the bounds up each time
    return np.minimum(np.maximum(values, lo), hi).astype(ELEMENT_DTYPES[element])


_BOUNDS = {name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
           for name, dtype in ELEMENT_DTYPES.items()}


def _operand(core: Any, base: int, offset: int) -> int:
    return core.regs[base] + offset


def _load(core: Any, base: int, offset: int, n: int, element: str) -> np.ndarray:
    return core.memory.load(core.regs[base] + offset, n, element).astype(np.int64)


def _binary(fn: Any) -> Any:
    def run(core: Any, o: Ops, t: str) -> None:
        a = _load(core, o[2], o[3], o[6], t)
        b = _load(core, o[4], o[5], o[6], t)
        core.memory.store(_operand(core, o[0], o[1]), fit(fn(a, b), t), t)

    return run


def _immediate(fn: Any) -> Any:
    def run(core: Any, o: Ops, t: str) -> None:
        src = _load(core, o[2], o[3], o[5], t)
        core.memory.store(_operand(core, o[0], o[1]), fit(fn(src, o[4]), t), t)

    return run


_BINARY = "dst a b n"
_IMMEDIATE = "dst src imm n"
semantic("vadd", _BINARY)(_binary(np.add))
semantic("vsub", _BINARY)(_binary(np.subtract))
semantic("vmul", _BINARY)(_binary(np.multiply))
semantic("vmax", _BINARY)(_binary(np.maximum))
semantic("vmin", _BINARY)(_binary(np.minimum))
semantic("vaddi", _IMMEDIATE)(_immediate(np.add))
semantic("vmaxi", _IMMEDIATE)(_immediate(np.maximum))
semantic("vmini", _IMMEDIATE)(_immediate(np.minimum))
# Shifting an int64 copy: << then saturate/wrap; >> is arithmetic (u8 values are >= 0).
semantic("vshl", _IMMEDIATE)(_immediate(np.left_shift))
semantic("vshr", _IMMEDIATE)(_immediate(np.right_shift))


@semantic("vscale", "dst src n zp m")
def vscale(core: Any, o: Ops, t: str) -> None:
    src = _load(core, o[2], o[3], o[4], t)
    core.memory.store(_operand(core, o[0], o[1]), fit((src - o[5]) * o[6], "i32"), "i32")


@semantic("requant", "dst src n table")
def requantize(core: Any, o: Ops, t: str) -> None:
    n = o[4]
    acc = _load(core, o[2], o[3], n, "i32")
    table = _load(core, o[5], o[6], 5 * n, "i32").reshape(-1, n, 5)
    mult, shift, zp, lo, hi = (table[..., k] for k in range(5))
    if shift.min() < 0 or shift.max() > requant.MAX_SHIFT:
        raise MemoryFault(f"requantization table holds a shift outside 0..{requant.MAX_SHIFT}")
    scaled = requant.rounding_shift(acc * mult, shift) + zp  # requant.apply on int64 arrays
    low, high = _BOUNDS[t]
    y = np.minimum(np.maximum(np.minimum(np.maximum(scaled, low), high), lo), hi)
    core.memory.store(_operand(core, o[0], o[1]), fit(y, t), t)


@semantic("vlut", "dst src n table")
def vlut(core: Any, o: Ops, t: str) -> None:
    index = core.memory.load(_operand(core, o[2], o[3]), o[4], "u8").astype(np.intp)
    table = core.memory.read(_operand(core, o[5], o[6]), 256)
    core.memory.write(_operand(core, o[0], o[1]), np.take_along_axis(table, index, axis=1))


def _windows(core: Any, o: Ops, t: str) -> np.ndarray:
    """src[i + k*stride] for k < count, i < n: [batch, count, n] int64."""
    n, count, stride = o[4], o[5], o[6]
    if count < 1:
        raise MemoryFault("a reduction needs count >= 1")
    span = (count - 1) * stride + n
    src = _load(core, o[2], o[3], span, t)
    index = np.arange(count)[:, None] * stride + np.arange(n)[None, :]
    return src[:, index]


@semantic("vredmax", "dst src n count stride")
def vredmax(core: Any, o: Ops, t: str) -> None:
    core.memory.store(_operand(core, o[0], o[1]), fit(_windows(core, o, t).max(axis=1), t), t)


@semantic("vredsum", "dst src n count stride")
def vredsum(core: Any, o: Ops, t: str) -> None:
    total = _windows(core, o, t).sum(axis=1)
    core.memory.store(_operand(core, o[0], o[1]), fit(total, "i32"), "i32")
