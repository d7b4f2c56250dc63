"""conv, gemm and matmul: float in float64 accumulation, quantized exactly in integers."""

from __future__ import annotations

import numpy as np

from cimc.reference.call import Call
from cimc.reference.integer import centered, finish, quant_arrays, rescale

# Integers up to 2^53 are exact in float64, so a BLAS product of integer
# operands is exact while every partial sum stays below it.
FLOAT64_EXACT = 2**53
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def correlate(
    x: np.ndarray,
    w: np.ndarray,
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
) -> np.ndarray:
    """Grouped 2-D cross-correlation, x[N,C,H,W] with w[M,C/group,kh,kw] -> [N,M,Ho,Wo].

    Channels-last windows times weights, in the dtype of the operands (float64,
    or int64 when float64 would not be exact): one matrix product over all
    kernel taps when channels are few, else one per tap.
    """
    n, c, h, w_in = x.shape
    m, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    top, left, bottom, right = pads
    ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (w_in + left + right - dw * (kw - 1) - 1) // sw + 1
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))).transpose(0, 2, 3, 1)

    def tap(i: int, j: int) -> np.ndarray:  # [N,Ho,Wo,C] inputs under kernel tap (i, j)
        rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
        cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
        return padded[:, rows, cols]

    if group == 1 and cg < 16:
        patches = np.stack([tap(i, j) for i in range(kh) for j in range(kw)], axis=3)
        taps = w.transpose(2, 3, 1, 0).reshape(kh * kw * cg, m)
        out = patches.reshape(n * ho * wo, kh * kw * cg) @ taps
        return out.reshape(n, ho, wo, m).transpose(0, 3, 1, 2)
    mg = m // group
    weights = w.reshape(group, mg, cg, kh, kw)
    out = np.zeros((n * ho * wo, group, mg), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = tap(i, j).reshape(n * ho * wo, group, cg)
            taps = weights[:, :, :, i, j]  # [group, mg, cg]
            if cg == 1:  # depthwise: a broadcast product, no reduction
                out += window * taps[None, :, :, 0]
            elif group == 1:
                out[:, 0, :] += window[:, 0, :] @ taps[0].T
            else:
                grouped = np.matmul(window.transpose(1, 0, 2), taps.transpose(0, 2, 1))
                out += grouped.transpose(1, 0, 2)
    return out.reshape(n, ho, wo, m).transpose(0, 3, 1, 2)


def _exact_dtype(xc: np.ndarray, wc: np.ndarray, terms: int) -> type:
    bound = int(np.abs(xc).max(initial=0)) * int(np.abs(wc).max(initial=0)) * terms
    return np.float64 if bound < FLOAT64_EXACT else np.int64


def _clamp_float(call: Call, y: np.ndarray) -> np.ndarray:
    clamp = call.attr("clamp")
    if clamp is not None:
        y = np.clip(y, clamp[0], clamp[1])
    return y.astype(np.float32)


def _requantize_accumulator(call: Call, acc: np.ndarray, channel_axis: int) -> np.ndarray:
    """Add the i32 bias, saturate to int32, rescale by sx*sw[c]/sy, finish in the result type."""
    x_type, w_type = call.types[0], call.types[1]
    channels = acc.shape[channel_axis]
    shape = [1] * acc.ndim
    shape[channel_axis] = channels
    if len(call.args) > 2:
        bias = call.args[2]
        if bias.dtype != np.int32:
            raise call.error(f"a quantized {call.op.kind} needs an i32 bias, not {bias.dtype}")
        acc = acc + bias.astype(np.int64).reshape(shape)
    acc = np.clip(acc, INT32_MIN, INT32_MAX)
    sx, _ = quant_arrays(x_type, 1)
    sw, _ = quant_arrays(w_type, 1)
    sy, _ = quant_arrays(call.result, 1)
    multiplier = np.broadcast_to(sx * sw.reshape(-1) / sy, (channels,)).reshape(shape)
    return finish(call, rescale(acc, multiplier))


def _check_quantized_operands(call: Call) -> None:
    x_type, w_type = call.types[0], call.types[1]
    if x_type.quant is None or w_type.quant is None:
        raise call.error("integer operands need quantization parameters")
    if x_type.quant.axis is not None:
        raise call.error("the input must be quantized per tensor")
    if w_type.quant.axis not in (None, 0):
        raise call.error("weights must be quantized per tensor or per output channel (axis 0)")


def conv(call: Call) -> np.ndarray:
    strides = call.attr("strides", [1, 1])
    pads = call.attr("pads", [0, 0, 0, 0])
    dilations = call.attr("dilations", [1, 1])
    group = int(call.attr("group", 1))
    x, w = call.args[0], call.args[1]
    if not call.quantized:
        y = correlate(x.astype(np.float64), w.astype(np.float64), strides, pads, dilations, group)
        if len(call.args) > 2:
            y = y + call.args[2].astype(np.float64).reshape(1, -1, 1, 1)
        return _clamp_float(call, y)
    _check_quantized_operands(call)
    xc, wc = centered(x, call.types[0]), centered(w, call.types[1])
    dtype = _exact_dtype(xc, wc, int(np.prod(w.shape[1:])))
    acc = correlate(xc.astype(dtype), wc.astype(dtype), strides, pads, dilations, group)
    return _requantize_accumulator(call, acc.astype(np.int64), channel_axis=1)


def gemm(call: Call) -> np.ndarray:
    x, w = call.args[0], call.args[1]
    if not call.quantized:
        # ONNX's forms too (canonicalize removes them, but the frontend's calibration
        # runs the module before): x transposed, w [K, N], alpha, beta.
        a = x.astype(np.float64).T if call.attr("trans_a", 0) else x.astype(np.float64)
        b = w.astype(np.float64) if call.attr("trans_b", 1) else w.astype(np.float64).T
        y = float(call.attr("alpha", 1.0)) * (a @ b.T)
        if len(call.args) > 2:
            y = y + float(call.attr("beta", 1.0)) * call.args[2].astype(np.float64)
        return _clamp_float(call, y)
    if {"trans_a", "trans_b", "alpha", "beta"} & set(call.op.attrs):
        raise call.error("a quantized gemm has weights [N, K] and no alpha or beta "
                         "(canonicalize writes the ONNX forms so)")
    _check_quantized_operands(call)
    xc, wc = centered(x, call.types[0]), centered(w, call.types[1])
    dtype = _exact_dtype(xc, wc, w.shape[1])
    acc: np.ndarray = xc.astype(dtype) @ wc.astype(dtype).T
    return _requantize_accumulator(call, acc.astype(np.int64), channel_axis=1)


def matmul(call: Call) -> np.ndarray:
    """The matrix product of two runtime tensors; quantized (8-bit, per tensor):
    `acc = Σ_k (a - za)(b - zb)` exactly, saturated once to int32, requantized with
    `m = sa · sb / sy` (docs/ir.md)."""
    a, b = call.args
    if not call.quantized:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    for ty in call.types:
        if ty.quant is None or ty.quant.axis is not None or ty.dtype not in ("i8", "u8"):
            raise call.error("a quantized matmul needs 8-bit operands quantized per tensor")
    acc = np.matmul(centered(a, call.types[0]), centered(b, call.types[1]))
    acc = np.clip(acc, INT32_MIN, INT32_MAX)
    sa, sb = (float(ty.quant.scale[0]) for ty in call.types)  # type: ignore[union-attr]
    sy = float(call.result.quant.scale[0])  # type: ignore[union-attr]
    return finish(call, rescale(acc, sa * sb / sy))


KERNELS = {"conv": conv, "gemm": gemm, "matmul": matmul}
