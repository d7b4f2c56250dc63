"""The softmax over each token's scores: the part of `lower` that makes a quantized
`softmax` (cimc/reference/softmax.py: a lookup of exp, a sum, a division) the chip's
`pixel_softmax` op.

`pixel_softmax(x, exp)` {P, zy, lo, hi}: `exp` is the reference's i32 table E[0..255]; per
pixel (token) the code finds the largest code, looks `E[max - x]` up as two byte tables
(high and low byte, `vlut`, widened and joined by `vscale` and `vadd.i32`), sums the row
(`vredsum.i32`), multiplies by `P` and divides by `sum · 2^8` (`vdiv.i32`), adds the
zero point and clamps (`requant` with M = 1).
"""

from __future__ import annotations

from cimc.diagnostics import CimcError
from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op
from cimc.passes.lower.common import bounds, per_tensor, replace
from cimc.reference.softmax import EXP_BITS, SUM_SHIFT, exp_table, reciprocal


def lower_softmax(module: Module, op: Op) -> None:
    """A quantized softmax over the last axis of tokens -> `pixel_softmax`."""
    x_type, y_type = module.values[op.inputs[0]], module.values[op.outputs[0]]
    sx, _ = per_tensor(x_type, "input", op)
    sy, zy = per_tensor(y_type, "result", op)
    n = image_dims(x_type)[2]
    p = reciprocal(sy)
    if (n << (EXP_BITS + SUM_SHIFT)) >= 2**31 or (p << EXP_BITS) >= 2**31:
        raise CimcError(f"op {op.name!r} (softmax): {n} scores per row at result scale "
                        f"{sy:g} would leave int32 (at most {2**31 >> (EXP_BITS + SUM_SHIFT)} "
                        f"scores, a scale above 2^-{31 - EXP_BITS - SUM_SHIFT})")
    table = module.add_constant(module.fresh_name(f"{op.name}.exp"),
                                exp_table(sx).astype("int32"))
    lo, hi = bounds(op, y_type)
    replace(module, op, "pixel_softmax", [op.inputs[0], table],
            {"P": p, "zy": zy, "lo": lo, "hi": hi})
