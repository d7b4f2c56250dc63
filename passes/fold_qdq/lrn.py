"""Local response normalization in integers: the part of `fold-qdq` that turns
`quantize(lrn(dequantize(x)))` (AlexNet, ZFNet, Inception v1: onnxruntime leaves LRN
float between its quantized neighbours) into ops the chip runs.

ONNX's LRN is `y = x / (bias + alpha / size * S)^beta`, S the sum of x² over a window of
`size` channels around each channel. With x 8-bit per tensor (scale sx, zero point zx):

    sq  = lut(x)            u8, scale ss = max over the codes of ((q - zx) sx)² / 255, zp 0:
                            sq = rhe(((x - zx) sx)² / ss)
    win = conv(sq, band)    u8, scale st = size * ss, zp 0: the band [C, C, 1, 1] holds 1
                            where input channel c' is in the window of output channel c,
                            so win = rhe(Σ sq / size) (the requantization m = 1 / size)
    den = lut(win)          u8, scale sd = max d / 255, zp 0, with
                            d(k) = (bias + alpha / size * st * k)^-beta:  den = rhe(d / sd)
    y   = mul(x, den)       the quantize's type: (x - zx) * den requantized, m = sx sd / sy

Tables are computed in float64 with round half to even. Every step is an integer op the
reference runs and `lower` maps to the chip (a lookup, a 1x1 conv on the crossbars with
the lookup of `den` at its end, and a `product`). The error against the float LRN is the
rounding of `den` to 8 bits (at most sd / 2, relative to the largest factor) and of the
squares; docs/ir.md states it.
"""

from __future__ import annotations

import numpy as np

from cimc.ir.module import Module, Op, Quant, TensorType

EIGHT_BIT = ("i8", "u8")


# Float ops that may sit between the LRN and the quantize: a max pool of quantized codes
# is the quantized max pool (quantization is monotonic), as AlexNet's LRN -> MaxPool.
BETWEEN = ("max_pool", "global_max_pool")


def lrn_operand(module: Module, quantize: Op) -> tuple[Op, str, list[Op]] | None:
    """(lrn, x, max pools after it) when `quantize` ends
    `quantize(max_pool(...(lrn(dequantize(x)))))` that can be folded: x 8-bit per tensor
    [N,C,H,W], the result 8-bit per tensor, the LRN and the pools each read only once."""
    result = module.values[quantize.outputs[0]]
    if result.dtype not in EIGHT_BIT or result.quant is None or result.quant.axis is not None:
        return None
    between: list[Op] = []
    lrn = module.producer(quantize.inputs[0])
    while lrn is not None and lrn.kind in BETWEEN:
        between.insert(0, lrn)
        lrn = module.producer(lrn.inputs[0])
    if lrn is None or lrn.kind != "lrn":
        return None
    for op in [lrn, *between]:
        if op.outputs[0] in module.outputs or len(module.consumers(op.outputs[0])) != 1:
            return None
    dequantize = module.producer(lrn.inputs[0])
    if dequantize is None or dequantize.kind != "dequantize":
        return None
    x = dequantize.inputs[0]
    x_type = module.values[x]
    if x_type.dtype not in EIGHT_BIT or x_type.quant is None or x_type.quant.axis is not None \
            or len(x_type.shape) != 4:
        return None
    return lrn, x, between


def fold_lrn(module: Module, quantize: Op, lrn: Op, x: str, between: list[Op]) -> None:
    """Replace `quantize(lrn(dequantize(x)))` by the integer ops of the module docstring;
    the last, the mul, takes the LRN's name and result; max pools between the LRN and the
    quantize take the quantize's quantization, the last of them replaces its result."""
    x_type, result = module.values[x], module.values[quantize.outputs[0]]
    assert x_type.quant is not None
    size = int(lrn.attrs["size"])
    alpha, beta = float(lrn.attrs.get("alpha", 1e-4)), float(lrn.attrs.get("beta", 0.75))
    bias = float(lrn.attrs.get("bias", 1.0))
    sx, zx = float(x_type.quant.scale[0]), int(x_type.quant.zero_point[0])
    info = np.iinfo(x_type.numpy_dtype)
    codes = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    squares = ((codes - zx) * np.float64(sx)) ** 2
    ss = float(squares.max() / 255) or 1.0
    square_table = np.clip(np.rint(squares / ss), 0, 255).astype(np.uint8)
    st = size * ss
    factors = (bias + alpha / size * st * np.arange(256, dtype=np.float64)) ** -beta
    sd = float(factors.max() / 255)
    factor_table = np.clip(np.rint(factors / sd), 0, 255).astype(np.uint8)
    channels = x_type.shape[1]
    before, after = (size - 1) // 2, size // 2  # ONNX: floor and ceil of (size - 1) / 2
    out_c, in_c = np.meshgrid(np.arange(channels), np.arange(channels), indexing="ij")
    band = ((in_c >= out_c - before) & (in_c <= out_c + after)).astype(np.int8)
    shape = x_type.shape
    name = lrn.name
    computed = lrn.outputs[0]
    placeholder = module.fresh_name(f"{computed}.folding")
    module.replace_uses(computed, placeholder)
    module.remove_op(lrn)
    square = module.add_op(
        "lut", [x, module.add_constant(module.fresh_name(f"{name}.square_table"), square_table)],
        [TensorType(shape, "u8", Quant((ss,), (0,)))], name=module.fresh_name(f"{name}.square"))
    window = module.add_op(
        "conv", [square.outputs[0], module.add_constant(
            module.fresh_name(f"{name}.band"), band.reshape(channels, channels, 1, 1),
            Quant((1.0,), (0,)))],
        [TensorType(shape, "u8", Quant((st,), (0,)))], name=module.fresh_name(f"{name}.window"),
        attrs={"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1})
    factor = module.add_op(
        "lut", [window.outputs[0], module.add_constant(module.fresh_name(f"{name}.factor_table"),
                                                        factor_table)],
        [TensorType(shape, "u8", Quant((sd,), (0,)))], name=module.fresh_name(f"{name}.factor"))
    module.add_op("mul", [x, factor.outputs[0]], [TensorType(shape, result.dtype, result.quant)],
                  name=name, outputs=[computed])
    module.replace_uses(placeholder, computed)
    for op in between:
        module.values[op.outputs[0]] = TensorType(module.values[op.outputs[0]].shape,
                                                  result.dtype, result.quant)
    module.replace_uses(quantize.outputs[0], between[-1].outputs[0] if between else computed)
    module.remove_op(quantize)
