"""The LayerNorm over each token's channels: the part of `lower` that makes a quantized
`layer_norm` (cimc/reference/layer_norm.py: sums of the centered codes and their squares,
a reciprocal square root, per-channel fixed-point gamma and beta) the chip's
`pixel_layernorm` op.

`pixel_layernorm(x, bias, finish)` {zx, m, e, k, a, floor}: `bias` is B i32 [D], `finish`
the requant table (M, shift, zp, lo, hi) i32 [D, 5]; per pixel (token) the code sums c and
c² (`vscale`, `vmul.i32`, `vredsum.i32`), forms V = D·S2 - S1² and Q on one element,
R = `visqrt.i32` Q, spreads S1 and R over the channels, (D·c - S1)·R, `vshr.i32` by a,
adds B and `requant`s with the per-channel table.
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op
from cimc.passes.lower.common import bounds, per_tensor, replace
from cimc.reference.layer_norm import constants


def lower_layer_norm(module: Module, op: Op) -> None:
    """A quantized LayerNorm over the last axis of tokens -> `pixel_layernorm`."""
    x_type, y_type = module.values[op.inputs[0]], module.values[op.outputs[0]]
    sx, zx = per_tensor(x_type, "input", op)
    sy, zy = per_tensor(y_type, "result", op)
    d = image_dims(x_type)[2]
    gamma = module.constants[op.inputs[1]].astype(np.float64).reshape(-1)
    beta = (module.constants[op.inputs[2]].astype(np.float64).reshape(-1)
            if len(op.inputs) > 2 else np.zeros(1))
    lo, hi = bounds(op, y_type)
    try:
        c = constants(d, sx, zx, sy, zy, float(op.attrs.get("epsilon", 1e-5)), gamma, beta,
                      max(hi - zy, zy - lo))
    except ValueError as exc:
        raise CimcError(f"op {op.name!r} (layer_norm): {exc}") from None
    finish = np.stack([c.mult, c.shift, c.zero, np.full(d, lo), np.full(d, hi)], axis=1)
    bias = module.add_constant(module.fresh_name(f"{op.name}.bias"), c.bias.astype("int32"))
    table = module.add_constant(module.fresh_name(f"{op.name}.finish"),
                                finish.astype("int32"))
    replace(module, op, "pixel_layernorm", [op.inputs[0], bias, table],
            {"zx": zx, "m": c.m, "e": c.e, "k": c.k, "a": c.a, "floor": c.floor})
