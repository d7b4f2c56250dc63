"""Sequences of tokens on the chip: the part of `lower` for [1, T, D] activations
(sequence models) and the [T, D] matrices their linear layers read.

A [1, T, D] tensor, or a [T, D] one (canonicalize writes a MatMul of a [1, T, D]
activation by a constant [D, E] as a reshape to [T, D], a gemm and a reshape back), is
stored as an image of one row of T pixels with D channels (cimc.dialect.chip.image_dims):
its row-major bytes are the NHWC bytes of that image. So a gemm of a [T, D] operand is a
1x1 convolution over the T pixels (lower_matvec as it is), the reshapes between [1, T, D]
and [T, D] are views, element-wise ops work pixel by pixel, and a mean over the tokens is
an average pool over the row (`lower_reduce_mean`). fold-qdq has already moved a
reshape of a model input behind its quantize (passes/fold_qdq/inputs.py).
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op
from cimc.passes.lower.common import bounds, fixed, per_tensor, replace


def lower_reduce_mean(module: Module, op: Op) -> None:
    """The mean over the tokens of a [1, T, D] (axis 1) or [T, D] (axis 0) tensor (or of
    [T, 1, D], axis 0: the same T tokens) -> an
    average `pool` over the image's one row: `acc = Σ (x - zx)`, requantized with
    `m = sx / (sy · T)`, as the reference's quantized reduce_mean."""
    x_type, y_type = module.values[op.inputs[0]], module.values[op.outputs[0]]
    shape = tuple(x_type.shape)
    axes = sorted(int(a) % len(shape) for a in op.attrs.get("axes") or range(len(shape)))
    # Every token and no channel: the leading axes of more than one element, not the last
    # ([1, T, D] axis 1, [T, D] axis 0, a recurrent layer's [T, 1, D] axis 0).
    kept = [k for k in range(len(shape) - 1) if k not in axes and shape[k] > 1]
    if len(shape) not in (2, 3) or kept or len(shape) - 1 in axes:
        raise CimcError(f"op {op.name!r} (reduce_mean): the chip averages the tokens of a "
                        f"[1, T, D] or [T, D] tensor (axis 1 or 0), not axes {axes} of "
                        f"{list(shape)}; average over H and W (a global average pool) or over "
                        "the tokens")
    sx, zx = per_tensor(x_type, "input", op)
    sy, zy = per_tensor(y_type, "result", op)
    _, count, _ = image_dims(x_type)
    mant, shift = fixed(op, np.float64(sx) / (np.float64(sy) * np.float64(count)),
                        f"input scale {sx:g} / (result scale {sy:g} x {count})")
    lo, hi = bounds(op, y_type)
    attrs = {"kernel": [1, count], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1],
             "mode": "avg", "offset": -count * zx, "M": mant, "shift": shift, "zy": zy,
             "lo": lo, "hi": hi}
    replace(module, op, "pool", [op.inputs[0]], attrs)
