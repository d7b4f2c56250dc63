"""Quantized ONNX ops in import-onnx: QDQ pairs and the QLinear/Integer operators.

QuantizeLinear and DequantizeLinear become `quantize` / `dequantize`; the
scale and zero point (constant inputs in ONNX) move into the Quant of the
integer value's type, so integer weights stay integer constants.
The operators that hide their quantization are spelled out as the same QDQ
pattern, so fold-qdq treats every quantized model alike:

    QLinearConv(x, w, B)   -> quantize(conv(dequantize(x), dequantize(w), dequantize(B)))
    QLinearMatMul(a, b)    -> quantize(matmul(dequantize(a), dequantize(b)))
    ConvInteger(x, w)      -> quantize(conv(dequantize(x), dequantize(w)))    : i32 q<scale=1, zp=0>
    MatMulInteger(a, b)    -> quantize(matmul(dequantize(a), dequantize(b)))  : i32 q<scale=1, zp=0>

ConvInteger/MatMulInteger carry zero points only: their operands get scale 1,
and their int32 result (scale 1, zero point 0) read through Cast is its
dequantization.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cimc.frontend.build import Converter, NodeImport
from cimc.frontend.ops import conv_attrs
from cimc.ir.module import Quant, TensorType

# Ops through which an integer tensor keeps its codes and so its quantization.
PASS_THROUGH = frozenset(
    {"MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout"}
)
UNSCALED = (1.0,)


def record_quants(imports: list[NodeImport]) -> dict[str, Quant]:
    """The quantization of every integer tensor, from the nodes that quantize or read it."""
    quants: dict[str, Quant] = {}

    def record(ctx: NodeImport, name: str, quant: Quant) -> None:
        old = quants.get(name)
        if old is not None and old != quant:
            raise ctx.error(
                f"tensor {name!r} is quantized as {_describe(quant)} here but as "
                f"{_describe(old)} elsewhere; cimc needs one quantization per tensor"
            )
        quants[name] = quant

    for ctx in imports:
        op, node = ctx.op_type, ctx.node
        axis = int(ctx.attrs.get("axis", 1))
        if op in ("QuantizeLinear", "DequantizeLinear"):
            if ctx.attrs.get("block_size", 0):
                raise ctx.error("blocked quantization (block_size) is not supported")
            target = node.output[0] if op == "QuantizeLinear" else node.input[0]
            record(ctx, target, _quant(ctx, 1, 2, axis, _rank(ctx, 0)))
        elif op == "QLinearConv":
            record(ctx, node.input[0], _quant(ctx, 1, 2, None, 4))
            weight = _quant(ctx, 4, 5, 0, 4)
            record(ctx, node.input[3], weight)
            record(ctx, node.output[0], _quant(ctx, 6, 7, None, 4))
            if ctx.has_input(8):
                record(ctx, node.input[8], _bias_quant(ctx, weight))
        elif op == "QLinearMatMul":
            record(ctx, node.input[0], _quant(ctx, 1, 2, None, _rank(ctx, 0)))
            record(ctx, node.input[3], _quant(ctx, 4, 5, -1, _rank(ctx, 3)))
            record(ctx, node.output[0], _quant(ctx, 6, 7, None, _rank(ctx, 0)))
        elif op in ("ConvInteger", "MatMulInteger"):
            old = quants.get(node.input[0])
            if old is not None and old.scale != UNSCALED:
                raise ctx.error(
                    f"its input {node.input[0]!r} is quantized with scale {old.scale[0]}; "
                    f"{op} is supported only on integers without a scale"
                )
            record(ctx, node.input[0], _zero_point_quant(ctx, 2, None, _rank(ctx, 0)))
            record(ctx, node.input[1], _zero_point_quant(ctx, 3, 0 if op == "ConvInteger" else -1,
                                                         _rank(ctx, 1)))
            record(ctx, node.output[0], Quant(UNSCALED, (0,)))
        elif op in PASS_THROUGH and node.input[0] in quants and node.output[0] not in quants:
            quants[node.output[0]] = quants[node.input[0]]
    return quants


def _rank(ctx: NodeImport, index: int) -> int:
    return len(ctx.type(index).shape)


def _quant(ctx: NodeImport, scale_index: int, zp_index: int, axis: int | None, rank: int) -> Quant:
    scale = ctx.constant(scale_index, "scale")
    zero_point = ctx.constant(zp_index, "zero point") if ctx.has_input(zp_index) else None
    return _make_quant(ctx, scale, zero_point, axis, rank)


def _zero_point_quant(ctx: NodeImport, zp_index: int, axis: int | None, rank: int) -> Quant:
    zero_point = (ctx.constant(zp_index, "zero point") if ctx.has_input(zp_index)
                  else np.zeros((), np.int32))
    return _make_quant(ctx, np.ones(zero_point.shape, np.float32), zero_point, axis, rank)


def _make_quant(
    ctx: NodeImport, scale: np.ndarray[Any, Any], zero_point: np.ndarray[Any, Any] | None,
    axis: int | None, rank: int,
) -> Quant:
    scale32 = scale.astype(np.float32).reshape(-1)
    scales = scale32.tolist()
    zps = [0] * len(scales) if zero_point is None else [int(z) for z in zero_point.reshape(-1)]
    if len(zps) != len(scales):
        raise ctx.error(f"its scale has {len(scales)} elements but its zero point {len(zps)}")
    if not (np.isfinite(scale32).all() and (scale32 > 0).all()):
        raise ctx.error(f"its quantization scale {scales if len(scales) > 1 else scales[0]} is "
                        "not a positive finite number; re-quantize the model")
    if len(scales) == 1:
        return Quant((scales[0],), (zps[0],))
    if axis is None:
        raise ctx.error("per-channel quantization of activations is not supported")
    return Quant(tuple(scales), tuple(zps), axis % rank)


def _bias_quant(ctx: NodeImport, weight: Quant) -> Quant:
    # QLinearConv's int32 bias is in the accumulator's scale x_scale * w_scale.
    x_scale = np.float32(ctx.constant(1, "scale").reshape(-1)[0])
    scales = tuple(float(x_scale * np.float32(s)) for s in weight.scale)
    return Quant(scales, (0,) * len(scales), weight.axis)


def _describe(quant: Quant) -> str:
    if quant.axis is None:
        return f"scale={quant.scale[0]}, zero point={quant.zero_point[0]}"
    return f"per-channel along axis {quant.axis}"


def _dequantized(ctx: NodeImport, index: int, role: str) -> str:
    ty = ctx.type(index)
    return ctx.emit(
        "dequantize", [ctx.operand(index)], result=ctx.fresh(role),
        result_type=TensorType(ty.shape, "f32"), name=ctx.fresh(f"dequantize_{role}"),
    )


def _requantized(ctx: NodeImport, kind: str, operands: list[str], attrs: dict[str, Any]) -> None:
    """Emit the float op named after the node, then quantize into the node's result."""
    real = ctx.emit(kind, operands, attrs, result=ctx.fresh("real"),
                    result_type=TensorType(ctx.result_type().shape, "f32"))
    ctx.emit("quantize", [real], name=ctx.fresh("quantize"))


def quantize(ctx: NodeImport) -> None:
    ctx.emit("quantize", [ctx.operand(0)])


def dequantize(ctx: NodeImport) -> None:
    ctx.emit("dequantize", [ctx.operand(0)])


def qlinear_conv(ctx: NodeImport) -> None:
    operands = [_dequantized(ctx, 0, "x"), _dequantized(ctx, 3, "w")]
    if ctx.has_input(8):
        operands.append(_dequantized(ctx, 8, "b"))
    _requantized(ctx, "conv", operands, conv_attrs(ctx, ctx.type(3).shape))


def qlinear_matmul(ctx: NodeImport) -> None:
    _requantized(ctx, "matmul", [_dequantized(ctx, 0, "a"), _dequantized(ctx, 3, "b")], {})


def conv_integer(ctx: NodeImport) -> None:
    operands = [_dequantized(ctx, 0, "x"), _dequantized(ctx, 1, "w")]
    _requantized(ctx, "conv", operands, conv_attrs(ctx, ctx.type(1).shape))


def matmul_integer(ctx: NodeImport) -> None:
    _requantized(ctx, "matmul", [_dequantized(ctx, 0, "a"), _dequantized(ctx, 1, "b")], {})


QUANT_CONVERTERS: dict[str, Converter] = {
    "ConvInteger": conv_integer,
    "DequantizeLinear": dequantize,
    "MatMulInteger": matmul_integer,
    "QLinearConv": qlinear_conv,
    "QLinearMatMul": qlinear_matmul,
    "QuantizeLinear": quantize,
}
