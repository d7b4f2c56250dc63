"""The quantization parameters every rule of `lower` reads, and the in-place rewrite of an
op into a chip kind: shared by the rules in passes/lower/ (one module per family)."""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op, TensorType
from cimc.reference.requant import MAX_SHIFT, fixed_point


def per_tensor(ty: TensorType, what: str, op: Op) -> tuple[float, int]:
    if ty.quant is None or ty.quant.per_channel or ty.dtype not in ("i8", "u8"):
        raise CimcError(f"op {op.name!r} ({op.kind}): the {what} must be an 8-bit tensor "
                        "quantized per tensor")
    return float(ty.quant.scale[0]), int(ty.quant.zero_point[0])


def bounds(op: Op, ty: TensorType, low: int | None = None,
            high: int | None = None) -> tuple[int, int]:
    """The result clamp intersected with the range of the result type."""
    info = np.iinfo(ty.numpy_dtype)
    lo, hi = int(info.min), int(info.max)
    clamp = op.attrs.get("clamp")
    if clamp is not None:
        lo, hi = max(lo, int(clamp[0])), min(hi, int(clamp[1]))
    if low is not None:
        lo = max(lo, low)
    if high is not None:
        hi = min(hi, high)
    return lo, hi


def checked_fixed_point(op: Op, multiplier: np.ndarray | float, scales: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`fixed_point`; a multiplier out of its range is the fault of the model's scales."""
    try:
        return fixed_point(multiplier)
    except ValueError as exc:
        raise CimcError(f"op {op.name!r} ({op.kind}): {scales} of {op.outputs[0]!r}: {exc}"
                        ) from None


def fixed(op: Op, multiplier: float, scales: str) -> tuple[int, int]:
    """(M, shift) of one multiplier. One too small for the mantissa (M would be 0, which
    the code generator reads as 'clamp only') keeps M = 1 at the largest shift: every
    code then rounds to 0, as the reference's M = 0 gives."""
    mant, shift = checked_fixed_point(op, np.float64(multiplier), scales)
    if mant == 0 and multiplier > 0:
        return 1, MAX_SHIFT
    return int(mant), int(shift)


def product_attrs(op: Op, a_type: TensorType, b_type: TensorType, y_type: TensorType
                  ) -> dict[str, int]:
    """What requantizes products (a - za)(b - zb) of two per-tensor 8-bit operands: their
    zero points, the multiplier sa * sb / sy in float64 exactly as the reference computes
    it, and the result's zero point and clamp."""
    sa, za = per_tensor(a_type, "first operand", op)
    sb, zb = per_tensor(b_type, "second operand", op)
    sy, zy = per_tensor(y_type, "result", op)
    mant, shift = fixed(op, np.float64(sa) * np.float64(sb) / np.float64(sy),
                        f"operand scales {sa:g} x {sb:g} / result scale {sy:g}")
    lo, hi = bounds(op, y_type)
    return {"za": za, "zb": zb, "M": mant, "shift": shift, "zy": zy, "lo": lo, "hi": hi}


def replace(module: Module, op: Op, kind: str, inputs: list[str], attrs: dict) -> Op:
    """Turn `op` into an op of `kind` in place (its name and result stay)."""
    module.set_inputs(op, inputs)
    op.kind = kind
    op.attrs = dict(attrs)
    return op
