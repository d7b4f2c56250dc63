"""canonicalize rewrites of resampling: a ConvTranspose is zero insertion and padding
(a `take`, data movement on the chip) followed by a stride-1 conv with the kernel
flipped and its input and output channels swapped (per group).

With stride s, dilation d, kernel k and begin padding p, the conv's input along an axis
is the operand's positions spread s apart, starting at `d(k-1) - p` (a negative start
crops), zeros elsewhere, as long as the result plus `d(k-1)`; the conv then sums, for
result position o, `x[i] * w[o + p - s*i]` exactly as ConvTranspose does. Quantized
(QDQ), the zeros are the input's zero point (the take moves integer codes, its fill the
code of 0.0) and the integer weights move with their per-channel scales (axis 1 of
ConvTranspose's [C, M/group, kh, kw] becomes axis 0 of the conv's [M, C/group, kh, kw]).
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op, Quant
from cimc.passes.canonicalize.edits import new_constant, new_op


def zero_insertion(size: int, out: int, stride: int, reach: int, begin: int) -> list[int]:
    """Operand positions (-1: zero) of the conv input along one axis: `out + reach`
    positions, operand position i at `reach - begin + stride * i`."""
    start = reach - begin
    found = []
    for q in range(out + reach):
        i, r = divmod(q - start, stride)
        found.append(i if q >= start and r == 0 and i < size else -1)
    return found


def _flipped(w: np.ndarray, group: int) -> np.ndarray:
    """[C, M/g, kh, kw] -> [M, C/g, kh, kw], each group's channels swapped, kernel flipped."""
    c, mg, kh, kw = w.shape
    moved = w.reshape(group, c // group, mg, kh, kw).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(moved[..., ::-1, ::-1].reshape(group * mg, c // group, kh, kw))


def _conv_weight(module: Module, op: Op, value: str) -> str:
    ty = module.values[value]
    group = int(op.attrs["group"])
    if module.is_constant(value) and ty.quant is None:
        return new_constant(module, f"{value}_flipped", _flipped(module.constants[value], group))
    producer = module.producer(value)
    if producer is not None and producer.kind == "dequantize" \
            and module.is_constant(producer.inputs[0]):
        inner = producer.inputs[0]
        quant = module.values[inner].quant
        if quant is not None and quant.axis is not None:
            if quant.axis != 1:
                raise CimcError(f"op {op.name!r} (conv_transpose): weights quantized per "
                                f"channel along axis {quant.axis}; only axis 1 (the output "
                                "channels, as onnxruntime quantizes them) is supported")
            quant = Quant(quant.scale * group, quant.zero_point * group, 0)
        data = _flipped(module.constants[inner], group)
        flipped = new_constant(module, f"{inner}_flipped", data, quant)
        return new_op(module, "dequantize", [flipped], ty.with_shape(data.shape),
                      f"{producer.name}_flipped")
    raise CimcError(f"op {op.name!r} (conv_transpose): the weights must be a constant (or a "
                    "dequantized integer constant)")


def conv_transpose_to_conv(module: Module, op: Op) -> bool:
    x, w, *bias = op.inputs
    x_type, y_type = module.values[x], module.values[op.outputs[0]]
    (sh, sw), (dh, dw) = op.attrs["strides"], op.attrs["dilations"]
    kh, kw = module.values[w].shape[2:]
    pt, pl = op.attrs["pads"][:2]
    maps = [zero_insertion(x_type.shape[2], y_type.shape[2], sh, dh * (kh - 1), pt),
            zero_insertion(x_type.shape[3], y_type.shape[3], sw, dw * (kw - 1), pl)]
    shape = (x_type.shape[0], x_type.shape[1], len(maps[0]), len(maps[1]))
    attrs = {"axes": [2, 3], "index": maps[0] + maps[1], "fill": 0.0}
    producer = module.producer(x)
    if producer is not None and producer.kind == "dequantize" \
            and not module.is_constant(producer.inputs[0]):
        # Spread the integer codes (zeros are the zero point), then dequantize.
        codes = producer.inputs[0]
        spread = new_op(module, "take", [codes], module.values[codes].with_shape(shape),
                        f"{op.name}_zeros", attrs)
        x = new_op(module, "dequantize", [spread], x_type.with_shape(shape),
                   f"{op.name}_zeros_dq")
    else:
        x = new_op(module, "take", [x], x_type.with_shape(shape), f"{op.name}_zeros", attrs)
    weight = _conv_weight(module, op, w)
    module.set_inputs(op, [x, weight, *bias])
    op.kind = "conv"
    op.attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [dh, dw],
                "group": int(op.attrs["group"])}
    return True
