"""Sequences of tokens on the chip: the part of `lower` for [1, T, D] activations
(sequence models) and the [T, D] matrices their linear layers read.

A [1, T, D] tensor, or a [T, D] one (canonicalize writes a MatMul of a [1, T, D]
activation by a constant [D, E] as a reshape to [T, D], a gemm and a reshape back), is
stored as an image of one row of T pixels with D channels (cimc.dialect.chip.image_dims):
its row-major bytes are the NHWC bytes of that image. So a gemm of a [T, D] operand is a
1x1 convolution over the T pixels (lower_matvec as it is), the reshapes between [1, T, D]
and [T, D] are views, element-wise ops work pixel by pixel, and a mean over the tokens is
an average pool over the row (`lower_reduction`, which also sums). fold-qdq has already moved a
reshape of a model input behind its quantize (passes/fold_qdq/inputs.py).
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op
from cimc.ir.shapes import spatial_axes
from cimc.passes.lower.common import bounds, fixed, per_tensor, replace


def lower_reduction(module: Module, op: Op) -> None:
    """The mean (or `reduce_sum`: the sum) over the tokens of a [1, T, D] (axis 1) or
    [T, D] (axis 0) tensor (or of [T, 1, D], axis 0: the same T tokens), or over H and W
    of [1, C, H, W] -> an average `pool` over the whole image: `acc = Σ (x - zx)`,
    requantized with `m = sx / (sy · count)` (a sum: `sx / sy`), as the reference's
    quantized reduce_mean and reduce_sum."""
    x_type, y_type = module.values[op.inputs[0]], module.values[op.outputs[0]]
    shape = tuple(x_type.shape)
    axes = sorted(int(a) % len(shape) for a in op.attrs.get("axes") or range(len(shape)))
    # Every token and no channel: the leading axes of more than one element, not the last
    # ([1, T, D] axis 1, [T, D] axis 0, a recurrent layer's [T, 1, D] axis 0).
    kept = [k for k in range(len(shape) - 1) if k not in axes and shape[k] > 1]
    tokens = len(shape) in (2, 3) and not kept and len(shape) - 1 not in axes
    image = len(shape) == 4 and shape[0] == 1 and spatial_axes(shape, axes)
    if not tokens and not image:
        raise CimcError(f"op {op.name!r} ({op.kind}): the chip reduces the tokens of a "
                        f"[1, T, D] or [T, D] tensor (axis 1 or 0) or H and W of an image, "
                        f"not axes {axes} of {list(shape)}")
    sx, zx = per_tensor(x_type, "input", op)
    sy, zy = per_tensor(y_type, "result", op)
    rows, count, _ = image_dims(x_type)
    count *= rows
    divisor = count if op.kind == "reduce_mean" else 1
    mant, shift = fixed(op, np.float64(sx) / (np.float64(sy) * np.float64(divisor)),
                        f"input scale {sx:g} / (result scale {sy:g} x {divisor})")
    lo, hi = bounds(op, y_type)
    attrs = {"kernel": [rows, count // rows], "strides": [1, 1], "pads": [0, 0, 0, 0],
             "dilations": [1, 1], "mode": "avg", "offset": -count * zx, "M": mant,
             "shift": shift, "zy": zy, "lo": lo, "hi": hi}
    replace(module, op, "pool", [op.inputs[0]], attrs)
