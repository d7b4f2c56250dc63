"""The product of two runtime tensors: the part of `lower` that makes a quantized `mul` of
two tensors (a squeeze-excitation gate `x * sigmoid(fc(pool(x)))`, a gated product of
two branches) the chip's `product` op.

`product(a, b)` {za, zb, M, shift, zy, lo, hi} computes `(a - za) * (b - zb)` exactly in
int32 (|a - za|, |b - zb| <= 255, so the product is below 2^16) and requantizes it with
`m = sa * sb / sy` (docs/ir.md, "mul"), per element. An operand may broadcast along the
rows, the columns and the channels of the image (a [1,C,1,1] squeeze-excitation gate or
a [1,1,H,W] spatial gate against a [1,C,H,W] image, one row against all rows); the
vector unit multiplies the channels of a pixel element by element, an operand of one
channel spread over them first.
"""

from __future__ import annotations

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op
from cimc.passes.lower.common import product_attrs, replace


def two_tensors(module: Module, op: Op) -> bool:
    """Whether `op` (a mul) reads two runtime tensors."""
    return len(op.inputs) == 2 and not any(module.is_constant(v) for v in op.inputs)


def lower_product(module: Module, op: Op) -> None:
    """A quantized mul of two runtime tensors -> `product` (module docstring)."""
    a, b = op.inputs
    a_type, b_type, y_type = (module.values[v] for v in (a, b, op.outputs[0]))
    y_shape = tuple(y_type.shape)
    for what, ty in (("first operand", a_type), ("second operand", b_type)):
        shape = tuple(ty.shape)
        if len(shape) != len(y_shape) or len(shape) not in (2, 3, 4) \
                or shape[0] != y_shape[0] \
                or any(d not in (1, full) for d, full in zip(shape[1:], y_shape[1:],
                                                             strict=True)):
            raise CimcError(f"op {op.name!r} (mul): the {what} {list(shape)} broadcasts to "
                            f"{list(y_shape)} other than along channels, rows and columns; "
                            "the chip multiplies an image by one of the same rank, possibly "
                            "one row, one pixel ([1,C,1,1], a squeeze-excitation gate) or "
                            "one channel ([1,1,H,W], a spatial gate)")
    replace(module, op, "product", [a, b], product_attrs(op, a_type, b_type, y_type))
