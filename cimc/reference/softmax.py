"""The integer softmax over the last axis (attention's scores, docs/ir.md "softmax"):
a lookup of exp, a sum, and a division by the sum, exactly in integers.

With x 8-bit per tensor (scale sx) and the result 8-bit per tensor (sy, zy), per row:

    d = max(x) - x                       codes, 0..255
    e = E[d],  E[k] = rhe(2^14 · exp(-sx · k))   (float64; E[0] = 2^14)
    S = Σ e
    y = sat(clamp(rhe(e · P / (S · 2^8)) + zy)),  P = rhe(2^8 / sy)

`rhe` rounds half to even; the products stay below 2^31 when P < 2^17 (sy > 2^-9) and the
row has fewer than 2^9 elements (`lower` refuses others).
"""

from __future__ import annotations

import numpy as np

from cimc.reference.call import Call
from cimc.reference.integer import finish

EXP_BITS = 14
SUM_SHIFT = 8


def exp_table(scale: float) -> np.ndarray:
    """E[k] = rhe(2^14 · exp(-scale · k)) for k = 0..255, int64."""
    return np.rint(np.exp(-np.float64(scale) * np.arange(256)) * 2.0**EXP_BITS).astype(np.int64)


def reciprocal(scale: float) -> int:
    """P = rhe(2^8 / scale): the result scale's reciprocal in fixed point."""
    return int(np.rint(2.0**SUM_SHIFT / np.float64(scale)))


def divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """rhe(numerator / denominator) for int64 arrays, denominator > 0, exactly."""
    floor = numerator // denominator
    twice = 2 * (numerator - floor * denominator)
    return floor + ((twice > denominator) | ((twice == denominator) & (floor % 2 == 1)))


def integer_softmax(call: Call) -> np.ndarray:
    x, x_type = call.args[0], call.types[0]
    axis = int(call.attr("axis", -1)) % x.ndim
    for ty in (x_type, call.result):
        if ty.quant is None or ty.quant.axis is not None or ty.dtype not in ("i8", "u8"):
            raise call.error("a quantized softmax needs 8-bit tensors quantized per tensor")
    assert x_type.quant is not None and call.result.quant is not None
    codes = x.astype(np.int64)
    e = exp_table(x_type.quant.scale[0])[codes.max(axis=axis, keepdims=True) - codes]
    total = e.sum(axis=axis, keepdims=True)
    y = divide(e * reciprocal(call.result.quant.scale[0]), total << SUM_SHIFT)
    return finish(call, y)
