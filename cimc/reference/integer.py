"""The integer domain: quantization parameters, exact requantization, and the
`quantize`, `dequantize` and `requantize` kernels.

Every real multiplier is computed in float64 from the scales of the IR types
and applied in the fixed-point form of `cimc.reference.requant` (round half to even).
"""

from __future__ import annotations

import math

import numpy as np

from cimc.ir.module import TensorType
from cimc.reference.call import Call
from cimc.reference.requant import SCALES_ADVICE, apply, fixed_point, saturate

# Mantissa width of the per-operand multipliers of quantized add/sub: with
# 8-bit operands |x - zx| <= 255 < 2^8, so |(a-za)*Ma + (b-zb)*Mb| < 2^29 and
# every intermediate fits in int32.
ADD_MULTIPLIER_BITS = 20


def quant_arrays(ty: TensorType, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float64) and zero point (int64) of `ty`, shaped to broadcast against rank `ndim`."""
    if ty.quant is None:
        raise ValueError(f"type {ty} has no quantization")
    scale = np.asarray(ty.quant.scale, dtype=np.float64)
    zero_point = np.asarray(ty.quant.zero_point, dtype=np.int64)
    if ty.quant.axis is None:
        return scale.reshape(()), zero_point.reshape(())
    shape = [1] * ndim
    shape[ty.quant.axis] = -1
    return scale.reshape(shape), zero_point.reshape(shape)


def centered(x: np.ndarray, ty: TensorType) -> np.ndarray:
    """x - zero_point as int64 (the real value in units of the scale)."""
    _, zero_point = quant_arrays(ty, x.ndim)
    return x.astype(np.int64) - zero_point


def rescale(acc: np.ndarray, multiplier: np.ndarray | float) -> np.ndarray:
    """round_half_even(acc * multiplier) via the (M, shift) fixed-point pair, int64.

    `multiplier` broadcasts against `acc`; each distinct value is converted once.
    """
    values, index = np.unique(np.asarray(multiplier, dtype=np.float64), return_inverse=True)
    mantissa, shift = fixed_point(values)
    shape = np.shape(multiplier)
    return apply(acc, mantissa[index].reshape(shape), shift[index].reshape(shape))


def finish(call: Call, values: np.ndarray) -> np.ndarray:
    """Add the result zero point, apply the `clamp` attribute, saturate to the result type."""
    _, zero_point = quant_arrays(call.result, values.ndim)
    values = values + zero_point
    clamp = call.attr("clamp")
    if clamp is not None:
        values = np.clip(values, int(clamp[0]), int(clamp[1]))
    return saturate(values, call.result.numpy_dtype)


def requantize_codes(x: np.ndarray, src: TensorType, dst: TensorType) -> np.ndarray:
    """Integer codes of `src` re-expressed in the quantization of `dst`, saturated."""
    if src.quant == dst.quant:
        return saturate(x.astype(np.int64), dst.numpy_dtype)
    src_scale, _ = quant_arrays(src, x.ndim)
    dst_scale, dst_zero = quant_arrays(dst, x.ndim)
    values = rescale(centered(x, src), src_scale / dst_scale) + dst_zero
    return saturate(values, dst.numpy_dtype)


def add_multipliers(scale_a: float, scale_b: float, scale_y: float) -> tuple[int, int, int]:
    """(Ma, Mb, shift) for quantized add/sub: Mx = round_half_even(sx/sy * 2^shift).

    The shift is shared and chosen so that the larger multiplier has exactly
    ADD_MULTIPLIER_BITS bits (2^19 <= max(Ma, Mb) <= 2^20).
    """
    ma, mb = scale_a / scale_y, scale_b / scale_y
    _, exponent = math.frexp(max(ma, mb))  # 2^(exponent-1) <= max < 2^exponent
    shift = ADD_MULTIPLIER_BITS - exponent
    if not 0 <= shift <= 62:
        raise ValueError(f"operand/result scale ratio {max(ma, mb):g} is out of range for add: "
                         f"{SCALES_ADVICE}")
    return round(ma * 2.0**shift), round(mb * 2.0**shift), shift


def quantize_values(values: np.ndarray, ty: TensorType) -> np.ndarray:
    """The codes of `values` in the quantization of `ty`: round_half_even(x / scale) +
    zero_point, saturated (divided in float32, like onnxruntime)."""
    x = np.asarray(values).astype(np.float32)
    scale, zero_point = quant_arrays(ty, x.ndim)
    scaled = np.rint(x / scale.astype(np.float32)).astype(np.float64) + zero_point
    return saturate(np.nan_to_num(scaled), ty.numpy_dtype)


def dequantize_values(codes: np.ndarray, ty: TensorType) -> np.ndarray:
    """scale * (codes - zero_point) in float32, codes quantized as `ty`."""
    scale, _ = quant_arrays(ty, codes.ndim)
    return centered(codes, ty).astype(np.float32) * scale.astype(np.float32)


def quantize(call: Call) -> np.ndarray:
    return quantize_values(call.args[0], call.result)


def dequantize(call: Call) -> np.ndarray:
    return dequantize_values(call.args[0], call.types[0])


def requantize(call: Call) -> np.ndarray:
    codes = requantize_codes(call.args[0], call.types[0], call.result)
    clamp = call.attr("clamp")
    if clamp is not None:
        codes = np.clip(codes, int(clamp[0]), int(clamp[1])).astype(codes.dtype)
    return codes


KERNELS = {"quantize": quantize, "dequantize": dequantize, "requantize": requantize}
