"""take: the layout ops that pick elements (Pad, Slice, Split, Resize and Upsample
nearest). Every result element is one operand element or the fill value.

`take(x) {axes, index, fill}`: along each axis of `axes` the result's position i reads
the operand's position `index_a[i]` (the maps of the axes one after another in
`index`, each as long as the result along its axis), or, where a map holds -1, is
`fill`. Axes not listed are copied. Quantized, the operand's codes are first
requantized to the result's quantization (as concat, reshape and transpose do) and
`fill` is the real value whose code fills: `sat(rhe(fill / sy) + zy)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cimc.ir.module import TensorType
from cimc.reference.call import Call
from cimc.reference.layout import _to_result


def axis_maps(axes: Sequence[int], index: Sequence[int], shape: Sequence[int]
              ) -> dict[int, np.ndarray]:
    """Axis -> its map (int64) from the flat `index` of a take with result `shape`."""
    maps, start = {}, 0
    for a in axes:
        maps[int(a)] = np.asarray(index[start:start + shape[a]], dtype=np.int64)
        start += shape[a]
    return maps


def take_values(x: np.ndarray, maps: dict[int, np.ndarray], fill: object) -> np.ndarray:
    """`x` with each axis of `maps` gathered through its map; -1 entries become `fill`."""
    y, holes = x, None
    for a, m in sorted(maps.items()):
        y = np.take(y, np.maximum(m, 0), axis=a)
        if (m < 0).any():
            shape = [1] * x.ndim
            shape[a] = len(m)
            hole = (m < 0).reshape(shape)
            holes = hole if holes is None else holes | hole
    if holes is not None:
        y = np.where(holes, np.asarray(fill, dtype=y.dtype), y)
    return y


def fill_code(value: float, ty: TensorType) -> int:
    """The code of real `value` in the quantization of `ty`: sat(rhe(value / s) + zp)."""
    assert ty.quant is not None
    info = np.iinfo(ty.numpy_dtype)
    code = np.rint(np.float64(value) / np.float64(ty.quant.scale[0])) + ty.quant.zero_point[0]
    return int(np.clip(code, info.min, info.max))


def take(call: Call) -> np.ndarray:
    x = _to_result(call, call.args[0], call.types[0])
    maps = axis_maps(call.attr("axes"), call.attr("index"), call.result_shape())
    fill = call.attr("fill", 0.0)
    value = fill_code(fill, call.result) if call.quantized else fill
    return take_values(x, maps, value)


KERNELS = {"take": take}
