"""ONNX Resize in float (linear and cubic; nearest is data movement, docs/ir.md).

Resize is separable: each resized axis is interpolated on its own, one axis after the
other. Along an axis of `size` elements resized to `out`, result position x reads the
source coordinate `source_coordinates` gives (the coordinate transformation mode), and
interpolates the elements around it:

* linear: the two neighbours, weights 1 - t and t (t the coordinate's fraction);
* cubic: the four neighbours, Keys' weights with coefficient `cubic_coeff_a`;
* with `antialias` when downscaling (scale < 1), the filter (triangle or cubic) is
  stretched by 1 / scale, so every input element under it contributes, its weights
  scaled to sum 1.

Neighbours outside the axis repeat its edge element, unless `exclude_outside`: then
their weights are dropped and the others scaled to sum 1.
With `tf_crop_and_resize` a result position whose coordinate falls outside the axis is
`extrapolation_value`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cimc.reference.call import Call

TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
              "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")


def source_coordinates(size: int, out: int, scale: float, transform: str,
                       roi: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """The source coordinate of each of the `out` result positions of an axis of `size`
    elements resized by `scale` (float64)."""
    x = np.arange(out, dtype=np.float64)
    width = scale * size
    if transform == "align_corners":
        return np.zeros(out) if width == 1 else x * (size - 1) / (width - 1)
    if transform == "asymmetric":
        return x / scale
    if transform == "pytorch_half_pixel":
        return np.full(out, -0.5) if width == 1 else (x + 0.5) / scale - 0.5
    if transform == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if transform == "half_pixel_symmetric":
        return size / 2 * (1 - out / width) + (x + 0.5) / scale - 0.5
    if transform == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if transform == "tf_crop_and_resize":
        start, end = roi
        if width == 1:
            return np.full(out, (start + end) * (size - 1) / 2)
        return start * (size - 1) + x * (end - start) * (size - 1) / (width - 1)
    raise ValueError(f"unknown coordinate_transformation_mode {transform!r}")


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at distances `t`."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _triangle(t: np.ndarray, _: float) -> np.ndarray:
    return np.maximum(0.0, 1 - np.abs(t))


def interpolation_matrix(size: int, coords: np.ndarray, mode: str, scale: float,
                         attrs: dict[str, Any]) -> np.ndarray:
    """[out, size] weights: result position i of the axis is Σ_j m[i, j] · x[j]."""
    kernel, support = (_triangle, 1) if mode == "linear" else (_cubic, 2)
    a = float(attrs.get("cubic_coeff_a", -0.75))
    antialias = bool(attrs.get("antialias", 0))
    stretch = min(scale, 1.0) if antialias else 1.0
    first = math.floor(-support / stretch) + 1
    offsets = np.arange(first, 2 - first)  # the taps around the element left of x
    matrix = np.zeros((len(coords), size))
    for i, x in enumerate(coords):
        left = math.floor(x)
        fraction = x - left
        if fraction == 0:  # an element's own coordinate counts as the right neighbour
            left, fraction = left - 1, 1.0
        taps = left + offsets
        weights = kernel((offsets - fraction) * stretch, a)
        if antialias:
            weights = weights / weights.sum()
        if attrs.get("exclude_outside", 0):
            weights = np.where((taps >= 0) & (taps < size), weights, 0.0)
            total = weights.sum()
            weights = weights / (total if total else 1.0)
        np.add.at(matrix[i], np.clip(taps, 0, size - 1), weights)
    return matrix


def resize(call: Call) -> np.ndarray:
    """`resize` (float): attributes `mode` (linear, cubic), `scales` and `roi` per axis
    (roi as starts then ends), `coordinate_transformation_mode`, `cubic_coeff_a`,
    `exclude_outside`, `antialias`, `extrapolation_value`; the result shape is the
    result type's."""
    x = call.args[0].astype(np.float64)
    attrs = call.op.attrs
    mode = call.attr("mode")
    transform = call.attr("coordinate_transformation_mode", "half_pixel")
    scales = call.attr("scales")
    rank = x.ndim
    roi = call.attr("roi", [0.0] * rank + [1.0] * rank)
    # a stack of samples (cimc.reference.batch) keeps axis 0 as it comes
    shape = (x.shape[0] * call.result.shape[0] // call.types[0].shape[0],
             *call.result.shape[1:])
    outside = np.zeros(shape, dtype=bool)
    for axis, out in enumerate(shape):
        size = x.shape[axis]
        if out == size and scales[axis] == 1 and transform != "tf_crop_and_resize":
            continue
        coords = source_coordinates(size, out, scales[axis], transform,
                                    (roi[axis], roi[rank + axis]))
        matrix = interpolation_matrix(size, coords, mode, scales[axis], attrs)
        x = np.moveaxis(np.tensordot(matrix, np.moveaxis(x, axis, 0), axes=1), 0, axis)
        if transform == "tf_crop_and_resize":
            beyond = (coords < 0) | (coords > size - 1)
            along = [1] * rank
            along[axis] = out
            outside |= beyond.reshape(along)
    x = np.where(outside, float(call.attr("extrapolation_value", 0.0)), x)
    return x.astype(np.float32)


KERNELS = {"resize": resize}
