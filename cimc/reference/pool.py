"""Pooling and reductions over windows: max on values or codes, averages as a
sum of (x - zx) requantized by sx / (sy * count)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from cimc.reference.call import Call
from cimc.reference.integer import centered, finish, quant_arrays, requantize_codes, rescale


def _windows(call: Call, x: np.ndarray, fill: float | int) -> Iterator[np.ndarray]:
    """One strided slice [N,C,Ho,Wo] per kernel position, padding with `fill`.

    The output size is the result type's, so ceil_mode needs no rule of its
    own here: windows running past the padded input read `fill`.
    """
    kh, kw = call.attr("kernel")
    sh, sw = call.attr("strides", [1, 1])
    dh, dw = call.attr("dilations", [1, 1])
    top, left, bottom, right = call.attr("pads", [0, 0, 0, 0])
    ho, wo = call.result.shape[2:]
    h, w = x.shape[2:]
    bottom = max(bottom, (ho - 1) * sh + dh * (kh - 1) + 1 - h - top)
    right = max(right, (wo - 1) * sw + dw * (kw - 1) + 1 - w - left)
    padded = np.pad(
        x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=np.asarray(fill, x.dtype)
    )
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            yield padded[:, :, rows, cols]


def window_extents(attrs: dict, size: tuple[int, int], out: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """How many positions of each average window count along H (one per output row) and
    along W (one per output column), as onnxruntime counts them: with count_include_pad
    the pads count but positions beyond them (ceil_mode) do not; without it only input
    positions count. A window's divisor is the product of its two extents."""
    kernel = attrs["kernel"]
    strides = attrs.get("strides", [1, 1])
    dilations = attrs.get("dilations", [1, 1])
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    include_pad = bool(attrs.get("count_include_pad", 0))

    def extent(axis: int, begin: int, end: int) -> np.ndarray:
        start = np.arange(out[axis]) * strides[axis] - begin
        positions = start[:, None] + dilations[axis] * np.arange(kernel[axis])[None, :]
        low, high = (-begin, size[axis] + end) if include_pad else (0, size[axis])
        return ((positions >= low) & (positions < high)).sum(axis=1)

    return extent(0, top, bottom), extent(1, left, right)


def _window_counts(call: Call, h: int, w: int) -> np.ndarray:
    """Divisor of each average window [Ho,Wo] (window_extents)."""
    ho, wo = call.result.shape[2:]
    rows, cols = window_extents(call.op.attrs, (h, w), (ho, wo))
    return np.outer(rows, cols)


def _lowest(dtype: np.dtype) -> float | int:
    """The padding of a max pool: below every value of `dtype`."""
    return int(np.iinfo(dtype).min) if np.issubdtype(dtype, np.integer) else -np.inf


def max_pool(call: Call) -> np.ndarray:
    x, x_type = call.args[0], call.types[0]
    if not call.quantized:  # float, or plain integers (ONNX MaxPool takes u8/i8 as they are)
        values = functools.reduce(np.maximum, _windows(call, x, _lowest(x.dtype)))
        return values.astype(call.result.numpy_dtype)
    codes = functools.reduce(np.maximum, _windows(call, x, np.iinfo(x.dtype).min))
    result = requantize_codes(codes, x_type, call.result)
    # A window wholly in the padding has no value: onnxruntime's maximum stays the lowest
    # float, which quantizes to the lowest code (not the padding code requantized).
    inside = functools.reduce(np.maximum, _windows(call, np.ones((1, 1, *x.shape[2:]),
                                                                 np.int8), 0))
    return np.where(inside == 0, np.iinfo(result.dtype).min, result).astype(result.dtype)


def avg_pool(call: Call) -> np.ndarray:
    x, x_type = call.args[0], call.types[0]
    counts = _window_counts(call, *x.shape[2:])
    if not call.quantized:
        total = sum(window.astype(np.float64) for window in _windows(call, x, 0.0))
        return (total / counts).astype(np.float32)
    acc = sum(window for window in _windows(call, centered(x, x_type), 0))
    sx, _ = quant_arrays(x_type, 1)
    sy, _ = quant_arrays(call.result, 1)
    return finish(call, rescale(np.asarray(acc), sx / (sy * counts.astype(np.float64))))


def global_avg_pool(call: Call) -> np.ndarray:
    x, x_type = call.args[0], call.types[0]
    if not call.quantized:
        return x.astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)
    acc = centered(x, x_type).sum(axis=(2, 3), keepdims=True)
    sx, _ = quant_arrays(x_type, 1)
    sy, _ = quant_arrays(call.result, 1)
    return finish(call, rescale(acc, sx / (sy * x.shape[2] * x.shape[3])))


def global_max_pool(call: Call) -> np.ndarray:
    x = call.args[0]
    y = x.max(axis=(2, 3), keepdims=True)
    if not call.quantized:
        return y.astype(call.result.numpy_dtype)
    return requantize_codes(y, call.types[0], call.result)


def reduce_mean(call: Call) -> np.ndarray:
    """The mean over `axes`; quantized (per tensor), as an average pool:
    `acc = Σ (x - zx)`, requantized with `m = sx / (sy · count)`."""
    return _reduce(call, mean=True)


def reduce_sum(call: Call) -> np.ndarray:
    """The sum over `axes`; quantized (per tensor): `acc = Σ (x - zx)`, requantized with
    `m = sx / sy`."""
    return _reduce(call, mean=False)


def _reduce(call: Call, mean: bool) -> np.ndarray:
    axes = call.attr("axes")
    keepdims = bool(call.attr("keepdims", 1))
    x = call.args[0]
    axis = None if axes is None else tuple(int(a) % x.ndim for a in axes)
    if not call.quantized:
        wide = x.astype(np.float64)
        value = wide.mean(axis=axis, keepdims=keepdims) if mean else \
            wide.sum(axis=axis, keepdims=keepdims)
        return np.asarray(value, dtype=np.float32)
    x_type = call.types[0]
    if x_type.quant is None or x_type.quant.axis is not None or \
            call.result.quant is None or call.result.quant.axis is not None:
        raise call.error(f"a quantized {call.op.kind} needs per-tensor quantization")
    acc = centered(x, x_type).sum(axis=axis, keepdims=keepdims)
    count = 1  # a sum divides by nothing
    if mean:
        count = x.size // max(acc.size, 1) if axis is None else \
            int(np.prod([x.shape[a] for a in axis]))
    sx, _ = quant_arrays(x_type, 1)
    sy, _ = quant_arrays(call.result, 1)
    return finish(call, rescale(np.asarray(acc), sx / (sy * count)))


KERNELS = {
    "max_pool": max_pool,
    "avg_pool": avg_pool,
    "global_avg_pool": global_avg_pool,
    "global_max_pool": global_max_pool,
    "reduce_mean": reduce_mean,
    "reduce_sum": reduce_sum,
}
