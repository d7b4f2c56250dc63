"""canonicalize rewrites of resampling: a ConvTranspose is zero insertion and padding
(a `take`, data movement on the chip) followed by a stride-1 conv with the kernel
flipped and its input and output channels swapped (per group); a quantized bilinear
upsampling by an integer scale is a depthwise ConvTranspose of the input with its edges
repeated (linear_resize_to_conv_transpose).

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
from cimc.ir.module import Module, Op, Quant, TensorType
from cimc.passes.canonicalize.edits import new_constant, new_op
from cimc.reference.resize import interpolation_matrix, source_coordinates


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


# A 2-D kernel value of a linear resize as an int8 code k / 2^bits (k <= 127): at most
# this many bits.
KERNEL_BITS = 7


def _phase_kernel(size: int, scale: float, transform: str, attrs: dict) -> np.ndarray | None:
    """K[p, a] (a = -1, 0, 1) with result position s·i + p of a linear resize by the
    integer `scale` s equal to Σ_a K[p, a] · x[clamp(i + a)], if such a K exists."""
    s = int(scale)
    if s != scale or s < 2 or size < 3:
        return None
    out = s * size
    matrix = interpolation_matrix(size, source_coordinates(size, out, scale, transform),
                                  "linear", scale, attrs)
    middle = size // 2
    kernel = np.array([[matrix[s * middle + p, middle + a] for a in (-1, 0, 1)]
                       for p in range(s)])
    rebuilt = np.zeros_like(matrix)
    for o in range(out):
        i, p = divmod(o, s)
        for a in (-1, 0, 1):
            rebuilt[o, min(max(i + a, 0), size - 1)] += kernel[p, a + 1]
    return kernel if np.array_equal(rebuilt, matrix) else None


def linear_resize_to_conv_transpose(module: Module, op: Op) -> bool:
    """A linear Resize of the H and W of dequantized codes by integer scales (half_pixel,
    pytorch_half_pixel or asymmetric coordinates: each result phase a fixed mix of three
    neighbours) whose 2-D weights are k / 2^b with k <= 127 and b <= 7 (scales 2 and 4
    have such weights) -> the codes with their edge repeated (a `take`), dequantized,
    and a depthwise ConvTranspose by the scales with those weights (quantized, so
    fold-qdq makes it integer: the chip's matvec computes the mix exactly before one
    requantization)."""
    x = op.inputs[0]
    producer = module.producer(x)
    shape = module.values[x].shape
    scales = [float(v) for v in op.attrs["scales"]]
    if (op.attrs["mode"] != "linear" or len(shape) != 4 or scales[:2] != [1.0, 1.0]
            or producer is None or producer.kind != "dequantize"
            or module.is_constant(producer.inputs[0])
            or op.attrs["coordinate_transformation_mode"] not in
            ("half_pixel", "pytorch_half_pixel", "asymmetric")):
        return False
    kernels = [_phase_kernel(shape[a], scales[a], op.attrs["coordinate_transformation_mode"],
                             op.attrs) for a in (2, 3)]
    if kernels[0] is None or kernels[1] is None:
        return False
    sh, sw = int(scales[2]), int(scales[3])
    # ConvTranspose tap m = p + s(1 - a) reads neighbour a of phase p (pads crop 2s).
    kh, kw = np.zeros(3 * sh), np.zeros(3 * sw)
    for k, s, taps in ((kernels[0], sh, kh), (kernels[1], sw, kw)):
        for p in range(s):
            for a in (-1, 0, 1):
                taps[p + s * (1 - a)] = k[p, a + 1]
    weights_2d = np.outer(kh, kw)
    bits = next((b for b in range(KERNEL_BITS + 1)
                 if np.array_equal(weights_2d * 2**b, np.rint(weights_2d * 2**b))), None)
    if bits is None or weights_2d.max() * 2**bits > 127:
        return False
    codes_2d = weights_2d * 2**bits
    channels = shape[1]
    codes, x_type = producer.inputs[0], module.values[x]
    edges = [[0, *range(n), n - 1] for n in shape[2:]]
    padded_shape = (shape[0], channels, shape[2] + 2, shape[3] + 2)
    padded = new_op(module, "take", [codes], module.values[codes].with_shape(padded_shape),
                    f"{op.name}_edges", {"axes": [2, 3], "index": edges[0] + edges[1]})
    dequantized = new_op(module, "dequantize", [padded], x_type.with_shape(padded_shape),
                         f"{op.name}_edges_dq")
    weights = np.broadcast_to(codes_2d.astype(np.int8), (channels, 1, *codes_2d.shape))
    quantized = new_constant(module, f"{op.name}_kernel", np.ascontiguousarray(weights),
                             Quant((2.0**-bits,), (0,)))
    kernel = new_op(module, "dequantize", [quantized],
                    TensorType(weights.shape, "f32"), f"{op.name}_kernel_dq")
    module.set_inputs(op, [dequantized, kernel])
    op.kind = "conv_transpose"
    op.attrs = {"strides": [sh, sw], "pads": [2 * sh, 2 * sw, 2 * sh, 2 * sw],
                "dilations": [1, 1], "group": channels}
    return True
