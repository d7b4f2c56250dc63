"""Element-wise ops: float in float64, quantized add/sub/mul and relu/clip exactly in
integers (the other activations: cimc/reference/activation.py)."""

from __future__ import annotations

import math

import numpy as np

from cimc.reference.call import Call
from cimc.reference.integer import (
    add_multipliers,
    centered,
    finish,
    quant_arrays,
    requantize_codes,
    rescale,
)
from cimc.reference.layer_norm import integer_layer_norm
from cimc.reference.requant import rounding_shift, saturate
from cimc.reference.softmax import integer_softmax


def _float_result(call: Call, y: np.ndarray) -> np.ndarray:
    clamp = call.attr("clamp")
    if clamp is not None:
        y = np.clip(y, clamp[0], clamp[1])
    return y.astype(np.float32)


def _plain(call: Call, a: np.ndarray, b: np.ndarray, kernel: np.ufunc) -> np.ndarray:
    """An add, sub or mul of tensors that are not quantized: float in float64, plain
    integers (an int8 Add of raw codes) wrapping in the result's type as ONNX's numpy
    definition does."""
    if call.result.dtype == "f32":
        return _float_result(call, kernel(a.astype(np.float64), b.astype(np.float64)))
    wide = kernel(a.astype(np.int64), b.astype(np.int64))
    return wide.astype(call.result.numpy_dtype)


def _per_tensor_scales(call: Call) -> list[float]:
    scales = []
    for ty in [*call.types, call.result]:
        if ty.quant is None or ty.quant.axis is not None:
            raise call.error("quantized operands and result must be quantized per tensor")
        scales.append(ty.quant.scale[0])
    return scales


def _add_or_sub(call: Call, sign: int) -> np.ndarray:
    a, b = call.args
    if not call.quantized:
        return _plain(call, a, b, np.add if sign > 0 else np.subtract)
    for ty in call.types:
        if ty.dtype not in ("i8", "u8"):
            raise call.error(f"quantized {call.op.kind} needs 8-bit operands, got {ty.dtype}")
    sa, sb, sy = _per_tensor_scales(call)
    ma, mb, shift = add_multipliers(sa, sb, sy)
    acc = centered(a, call.types[0]) * ma + sign * centered(b, call.types[1]) * mb
    return finish(call, rounding_shift(acc, np.asarray(shift)))


def add(call: Call) -> np.ndarray:
    return _add_or_sub(call, 1)


def sub(call: Call) -> np.ndarray:
    return _add_or_sub(call, -1)


def mul(call: Call) -> np.ndarray:
    a, b = call.args
    if not call.quantized:
        return _plain(call, a, b, np.multiply)
    sa, sb, sy = _per_tensor_scales(call)
    acc = centered(a, call.types[0]) * centered(b, call.types[1])
    return finish(call, rescale(acc, sa * sb / sy))


def div(call: Call) -> np.ndarray:
    """a / b (plain integers: truncated toward zero, as ONNX); quantized: the real
    quotient in float64, rounded half to even in the result's scale (a zero divisor gives
    the signed infinity, saturated; 0 / 0 gives 0)."""
    a, b = call.args
    if not call.quantized:
        if call.result.dtype != "f32":  # plain integers: ONNX truncates toward zero
            a64, b64 = a.astype(np.int64), b.astype(np.int64)
            if not b64.all():
                raise call.error("integer division by zero")
            quotient = np.abs(a64) // np.abs(b64) * np.sign(a64) * np.sign(b64)
            return quotient.astype(call.result.numpy_dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            return _float_result(call, a.astype(np.float64) / b.astype(np.float64))
    sa, sb, sy = _per_tensor_scales(call)
    numerator = centered(a, call.types[0]).astype(np.float64) * np.float64(sa)
    denominator = centered(b, call.types[1]).astype(np.float64) * np.float64(sb)
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = np.rint(numerator / denominator / np.float64(sy))
    quotient = np.clip(np.nan_to_num(quotient, nan=0.0), -2.0**40, 2.0**40)
    return finish(call, quotient.astype(np.int64))


def pow_(call: Call) -> np.ndarray:
    """a ** b in the base's type (ONNX Pow); not quantized (a quantized model's Pow of
    one tensor becomes a `lut`)."""
    a, b = call.args
    if call.quantized:
        raise call.error("pow of quantized tensors is not supported; keep it float")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if call.result.dtype == "f32":
            return _float_result(call, np.power(a.astype(np.float64), b.astype(np.float64)))
        if np.issubdtype(b.dtype, np.integer):  # exact integer powers
            if (b < 0).any():
                raise call.error("integer pow with a negative exponent")
            return np.power(a.astype(np.int64), b.astype(np.int64)).astype(
                call.result.numpy_dtype)
        return np.power(a.astype(np.float64), b.astype(np.float64)).astype(
            call.result.numpy_dtype)


def _code_bound(bound: float, scale: np.ndarray) -> np.ndarray:
    """round(bound / scale) as int64; a bound beyond every code (a clip at +-FLT_MAX) is
    held within int64 instead of overflowing the cast (codes saturate to the type after)."""
    return np.clip(np.rint(np.float64(bound) / scale), -2.0**62, 2.0**62).astype(np.int64)


def _bounded(call: Call, low: float, high: float) -> np.ndarray:
    """Integer relu/clip: requantize to the result, then clamp to the quantized bounds."""
    codes = requantize_codes(call.args[0], call.types[0], call.result).astype(np.int64)
    scale, zero_point = quant_arrays(call.result, codes.ndim)
    if math.isfinite(low):
        codes = np.maximum(codes, zero_point + _code_bound(low, scale))
    if math.isfinite(high):
        codes = np.minimum(codes, zero_point + _code_bound(high, scale))
    clamp = call.attr("clamp")
    if clamp is not None:
        codes = np.clip(codes, int(clamp[0]), int(clamp[1]))
    return saturate(codes, call.result.numpy_dtype)


def relu(call: Call) -> np.ndarray:
    if call.quantized:
        return _bounded(call, 0.0, math.inf)
    # Plain integers (ONNX Relu takes i8 as it is) stay integers: max is exact.
    return np.maximum(call.args[0], 0).astype(call.result.numpy_dtype)


def clip(call: Call) -> np.ndarray:
    low = float(call.attr("min", -math.inf))
    high = float(call.attr("max", math.inf))
    if call.quantized:
        return _bounded(call, low, high)
    x = call.args[0]
    if np.issubdtype(x.dtype, np.integer):  # plain integers: bounds rounded as ONNX's are
        info = np.iinfo(x.dtype)
        low, high = max(low, info.min), min(high, info.max)
        return np.clip(x, math.ceil(low), math.floor(high)).astype(call.result.numpy_dtype)
    return np.clip(x, low, high).astype(np.float32)


def _float_only(call: Call) -> np.ndarray:
    if call.quantized:
        raise call.error(f"{call.op.kind} is float only; keep it between dequantize and quantize")
    return call.args[0].astype(np.float64)


def softmax(call: Call) -> np.ndarray:
    if call.quantized:  # over the last axis, in integers (cimc/reference/softmax.py)
        return integer_softmax(call)
    x = _float_only(call)
    axis = int(call.attr("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def log_softmax(call: Call) -> np.ndarray:
    """ONNX LogSoftmax, float only: x - max - log Σ exp(x - max) along `axis`."""
    x = _float_only(call)
    axis = int(call.attr("axis", -1))
    shifted = x - x.max(axis=axis, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(np.float32)


def lrn(call: Call) -> np.ndarray:
    x = _float_only(call)
    size = int(call.attr("size"))
    alpha, beta = float(call.attr("alpha", 1e-4)), float(call.attr("beta", 0.75))
    bias = float(call.attr("bias", 1.0))
    before, after = (size - 1) // 2, size // 2  # ONNX: floor and ceil of (size-1)/2
    squares = np.pad(x * x, ((0, 0), (before, after)) + ((0, 0),) * (x.ndim - 2))
    window = sum(squares[:, i : i + x.shape[1]] for i in range(size))
    return (x / (bias + alpha / size * window) ** beta).astype(np.float32)


def layer_norm(call: Call) -> np.ndarray:
    """ONNX LayerNormalization's Y: over axes [axis, rank), (x - mean) / sqrt(var + eps)
    * scale + bias, in float64; quantized over the last axis, in integers
    (cimc/reference/layer_norm.py)."""
    if call.quantized:
        return integer_layer_norm(call)
    x = _float_only(call).astype(np.float64)
    axes = tuple(range(int(call.attr("axis")), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(variance + float(call.attr("epsilon", 1e-5)))
    y = y * call.args[1].astype(np.float64)
    if len(call.args) > 2:
        y = y + call.args[2].astype(np.float64)
    return y.astype(np.float32)


def batch_norm(call: Call) -> np.ndarray:
    x = _float_only(call)
    channel = (1, -1) + (1,) * (x.ndim - 2)
    scale, bias, mean, var = (a.astype(np.float64).reshape(channel) for a in call.args[1:])
    epsilon = float(call.attr("epsilon", 1e-5))
    return ((x - mean) / np.sqrt(var + epsilon) * scale + bias).astype(np.float32)


KERNELS = {
    "add": add,
    "sub": sub,
    "mul": mul,
    "div": div,
    "pow": pow_,
    "relu": relu,
    "clip": clip,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "lrn": lrn,
    "layer_norm": layer_norm,
    "batch_norm": batch_norm,
}
