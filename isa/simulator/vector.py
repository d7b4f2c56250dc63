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
from cimc.reference.layer_norm import inverse_sqrt

Ops = tuple[int, ...]


def fit(values: np.ndarray, element: str) -> np.ndarray:
    """int64 values as `element`: saturated for i8/u8, wrapped for i32."""
    if element == "i32":
        return values.astype(np.int32)
    return saturate(values, element).astype(ELEMENT_DTYPES[element])


def saturate(values: np.ndarray, element: str) -> np.ndarray:
    """int64 values clipped to the range of i8/u8 (i32: unchanged, a store wraps them)."""
    if element == "i32":
        return values
    lo, hi = _BOUND_ARRAYS[element]
    return np.minimum(np.maximum(values, lo), hi)


_BOUNDS = {name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
           for name, dtype in ELEMENT_DTYPES.items()}
# The bounds as 0-d int64 arrays: a ufunc converts a Python int bound every call (2x slower
# on the short vectors that dominate). requant.saturate, without looking the bounds up.
_BOUND_ARRAYS = {name: (np.array(lo), np.array(hi)) for name, (lo, hi) in _BOUNDS.items()}


def _operand(core: Any, base: int, offset: int) -> int:
    return core.regs[base] + offset


def _load(core: Any, base: int, offset: int, n: int, element: str) -> np.ndarray:
    return core.memory.elements(core.regs[base] + offset, n, element).astype(np.int64)


def binary_values(fn: Any, a: np.ndarray, b: np.ndarray, t: str) -> np.ndarray:
    """fn(a, b) as the element type `t` stores it (arrays of any leading shape): i32 in
    int32, which wraps modulo 2^32 as the stored int64 result would; i8/u8 in int64,
    saturated (saturate() written out: at 16 elements a call costs as much as a ufunc)."""
    if t == "i32":
        return fn(a, b)
    y = fn(a.astype(np.int64), b.astype(np.int64))
    lo, hi = _BOUND_ARRAYS[t]
    return np.minimum(np.maximum(y, lo), hi)


def immediate_values(fn: Any, src: np.ndarray, imm: int, t: str) -> np.ndarray:
    """fn(src, imm) in int64, saturated to i8/u8 (i32: the store wraps it)."""
    return saturate(fn(src.astype(np.int64), imm), t)


def _binary(fn: Any) -> Any:
    def run(core: Any, o: Ops, t: str) -> None:
        memory, regs = core.memory, core.regs
        a = memory.elements(regs[o[2]] + o[3], o[6], t)
        b = memory.elements(regs[o[4]] + o[5], o[6], t)
        memory.put(regs[o[0]] + o[1], binary_values(fn, a, b, t), t)

    return run


def _immediate(fn: Any) -> Any:
    def run(core: Any, o: Ops, t: str) -> None:
        memory, regs = core.memory, core.regs
        src = memory.elements(regs[o[2]] + o[3], o[5], t)
        memory.put(regs[o[0]] + o[1], immediate_values(fn, src, o[4], t), t)

    return run


# Elementwise instructions, by name: operand layout ("dst a b n" or "dst src imm n") and
# function. A counted loop of them may work all its iterations out at once (batch.py).
ELEMENTWISE: dict[str, tuple[str, Any]] = {}


def _elementwise(name: str, layout: str, fn: Any) -> None:
    ELEMENTWISE[name] = (layout, fn)
    semantic(name, layout)((_binary if layout == _BINARY else _immediate)(fn))


_BINARY = "dst a b n"
_IMMEDIATE = "dst src imm n"
_elementwise("vadd", _BINARY, np.add)
_elementwise("vsub", _BINARY, np.subtract)
_elementwise("vmul", _BINARY, np.multiply)
_elementwise("vmax", _BINARY, np.maximum)
_elementwise("vmin", _BINARY, np.minimum)
_elementwise("vaddi", _IMMEDIATE, np.add)
_elementwise("vmaxi", _IMMEDIATE, np.maximum)
_elementwise("vmini", _IMMEDIATE, np.minimum)
# Shifting an int64 copy: << then saturate/wrap; >> is arithmetic (u8 values are >= 0).
_elementwise("vshl", _IMMEDIATE, np.left_shift)
_elementwise("vshr", _IMMEDIATE, np.right_shift)


@semantic("vscale", "dst src n zp m")
def vscale(core: Any, o: Ops, t: str) -> None:
    src = _load(core, o[2], o[3], o[4], t)
    core.memory.store(_operand(core, o[0], o[1]), fit((src - o[5]) * o[6], "i32"), "i32")


@semantic("requant", "dst src n table")
def requantize(core: Any, o: Ops, t: str) -> None:
    n, memory, regs = o[4], core.memory, core.regs
    acc = memory.elements(regs[o[2]] + o[3], n, "i32")
    where = regs[o[5]] + o[6]
    data = memory.elements(where, 5 * n, "i32").tobytes()
    # A layer applies one table to every pixel: its arrays are worked out again only when
    # its bytes changed.
    prepared = core.requant_tables.get((where, n, t))
    if prepared is None or prepared[0] != data:
        if len(core.requant_tables) >= 4096:
            core.requant_tables.clear()
        prepared = core.requant_tables[(where, n, t)] = (data, *_requant_table(data, n, t))
    _, mult, shifted, zp, low, high = prepared
    scaled = shifted(acc * mult)  # requant.apply on int64 arrays
    scaled += zp
    memory.put(regs[o[0]] + o[1], np.minimum(np.maximum(scaled, low), high), t)


def _requant_table(data: bytes, n: int, t: str) -> tuple[Any, ...]:
    """(M, rounding shift, zero point, low, high) of a table's bytes, for requantize().

    The result is clipped to the type, to the table's [lo, hi], then stored as t (i8/u8:
    clipped again). A clip after a clip is one clip, so low/high are where the three take
    the smallest and largest int64.
    """
    table = np.frombuffer(data, "<i4").astype(np.int64).reshape(-1, n, 5)
    mult, shift, zp, lo, hi = (np.ascontiguousarray(table[..., k]) for k in range(5))
    if shift.min() < 0 or shift.max() > requant.MAX_SHIFT:
        raise MemoryFault(f"requantization table holds a shift outside 0..{requant.MAX_SHIFT}")
    low, high = _BOUNDS[t]

    def clip(scaled: np.ndarray) -> np.ndarray:
        y = np.minimum(np.maximum(np.minimum(np.maximum(scaled, low), high), lo), hi)
        return saturate(y, t)  # i32: lo, hi are i32, so storing y wraps nothing

    edge = np.iinfo(np.int64)
    return (mult, requant.rounding_shifter(shift), zp,
            clip(np.full(mult.shape, edge.min)), clip(np.full(mult.shape, edge.max)))


@semantic("vlut", "dst src n table")
def vlut(core: Any, o: Ops, t: str) -> None:
    index = core.memory.load(_operand(core, o[2], o[3]), o[4], "u8").astype(np.intp)
    table = core.memory.read(_operand(core, o[5], o[6]), 256)
    core.memory.write(_operand(core, o[0], o[1]), np.take_along_axis(table, index, axis=1))


@semantic("vgather", "dst src n index fill")
def vgather(core: Any, o: Ops, t: str) -> None:
    n = o[4]
    index = core.memory.elements(_operand(core, o[5], o[6]), n, "i32").astype(np.int64)
    if n == 0:
        return
    span = int(index.max()) + 1
    src = core.memory.read(_operand(core, o[2], o[3]), max(span, 1))
    filled = index < 0
    picked = np.take_along_axis(src, np.where(filled, 0, index), axis=1)
    fill = np.array(o[7], dtype=np.int64).astype(np.uint8)  # the byte of an i8 or u8 code
    core.memory.write(_operand(core, o[0], o[1]), np.where(filled, fill, picked))


def _windows(core: Any, o: Ops, t: str) -> np.ndarray:
    """src[i + k*stride] for k < count, i < n: [batch, count, n] int64."""
    n, count, stride = o[4], o[5], o[6]
    if count < 1:
        raise MemoryFault("a reduction needs count >= 1")
    span = (count - 1) * stride + n
    src = _load(core, o[2], o[3], span, t)
    index = np.arange(count)[:, None] * stride + np.arange(n)[None, :]
    return src[:, index]


@semantic("vdiv", "dst a b n")
def vdiv(core: Any, o: Ops, t: str) -> None:
    """Quotients rounded half to even, exactly (a softmax's division by its row sum)."""
    a = _load(core, o[2], o[3], o[6], t)
    b = _load(core, o[4], o[5], o[6], t)
    if (b <= 0).any():
        raise MemoryFault("vdiv: a divisor is not positive")
    floor = a // b
    twice = 2 * (a - floor * b)
    floor += (twice > b) | ((twice == b) & (floor % 2 == 1))
    core.memory.store(_operand(core, o[0], o[1]), fit(floor, "i32"), "i32")


@semantic("visqrt", "dst src imm n")
def visqrt(core: Any, o: Ops, t: str) -> None:
    """floor(2^imm / sqrt(src)), exactly (a LayerNorm's 1 / standard deviation)."""
    src = _load(core, o[2], o[3], o[5], t)
    if (src <= 0).any():
        raise MemoryFault("visqrt: an operand is not positive")
    core.memory.store(_operand(core, o[0], o[1]), fit(inverse_sqrt(src, o[4]), "i32"), "i32")


@semantic("vredmax", "dst src n count stride")
def vredmax(core: Any, o: Ops, t: str) -> None:
    core.memory.store(_operand(core, o[0], o[1]), fit(_windows(core, o, t).max(axis=1), t), t)


@semantic("vredsum", "dst src n count stride")
def vredsum(core: Any, o: Ops, t: str) -> None:
    total = _windows(core, o, t).sum(axis=1)
    core.memory.store(_operand(core, o[0], o[1]), fit(total, "i32"), "i32")
