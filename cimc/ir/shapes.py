"""Shape functions of the op kinds: the result shape their operands and attributes give.

The verifier's table (cimc/ir/verifier.py, `OpSpec.shape`) names one function
per kind where the shape is well defined. A function takes the operand
types, the attributes (already checked against the table) and the result
type, and returns the shapes the result may have, the first being the one
to name in a message; it raises ShapeError when the operands themselves do
not fit together. Formulas follow ONNX (docs/ir.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cimc.ir.module import TensorType

Shape = tuple[int, ...]
ShapeRule = Callable[[list[TensorType], dict[str, Any], TensorType], list[Shape]]


class ShapeError(ValueError):
    """Operands or attributes that give no result shape; the message says why."""


def spatial_axes(shape: Sequence[int], axes: Sequence[int]) -> bool:
    """Whether `axes` of an [N, C, H, W] shape are H and W, less either of size 1."""
    reduced = {int(a) % len(shape) for a in axes}
    return bool(reduced) and reduced <= {2, 3} and \
        all(a in reduced or shape[a] == 1 for a in (2, 3))


def _shape_text(shape: Sequence[int]) -> str:
    return f"[{','.join(str(d) for d in shape)}]"


def _rank(ty: TensorType, rank: int, what: str) -> Shape:
    if len(ty.shape) != rank:
        raise ShapeError(f"the {what} must be {rank}-D, got {_shape_text(ty.shape)}")
    return ty.shape


def _positive(attrs: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in attrs and any(v < 1 for v in attrs[key]):
            raise ShapeError(f"attribute '{key}' must be positive, got {attrs[key]}")
    if any(p < 0 for p in attrs.get("pads", ())):
        raise ShapeError(f"attribute 'pads' must not be negative, got {attrs['pads']}")


def window_count(size: int, kernel: int, stride: int, dilation: int, before: int, after: int,
                 ceil_mode: bool = False) -> list[int]:
    """How many windows fit along one axis (ONNX Conv/MaxPool/AveragePool).

    With `ceil_mode` there are two conventions: onnx's shape inference rounds
    up, onnxruntime and PyTorch then drop a last window that would start in
    the bottom padding. Both counts are returned, onnx's first.
    """
    span = size + before + after - dilation * (kernel - 1) - 1
    # with ceil_mode a window may run past the padded input (onnx and onnxruntime
    # count one window of a kernel larger than the input by less than a stride)
    if span < 0 and not (ceil_mode and -(-span // stride) >= 0):
        raise ShapeError(f"a window of {kernel} (dilation {dilation}) does not fit "
                         f"{size} positions padded by {before}+{after}")
    if not ceil_mode:
        return [span // stride + 1]
    count = -(-span // stride) + 1
    if (count - 1) * stride >= size + before:
        return [count, count - 1]
    return [count]


def _windows(image: Shape, attrs: dict[str, Any], ceil_mode: bool = False) -> list[Shape]:
    """Every (OH, OW) the window attributes allow on an (H, W) image."""
    kernel, strides = attrs["kernel"], attrs["strides"]
    pads, dilations = attrs["pads"], attrs.get("dilations", [1, 1])
    rows, cols = (window_count(image[i], kernel[i], strides[i], dilations[i], pads[i],
                               pads[i + 2], ceil_mode) for i in (0, 1))
    return [(r, c) for r in rows for c in cols]


def broadcast(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """Elementwise ops: numpy broadcasting of all operands."""
    try:
        return [tuple(np.broadcast_shapes(*(ty.shape for ty in operands)))]
    except ValueError:
        shapes = " and ".join(_shape_text(ty.shape) for ty in operands)
        raise ShapeError(f"operand shapes {shapes} do not broadcast") from None


def backend_eltwise(operands: list[TensorType], attrs: dict[str, Any],
                    result: TensorType) -> list[Shape]:
    """eltwise: its two operands broadcast (a third, a lookup table, is not data)."""
    return broadcast(operands[:2], attrs, result)


def same(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """Ops that keep their (first) operand's shape."""
    return [operands[0].shape]


def axis_in_rank(operands: list[TensorType], attrs: dict[str, Any],
                 result: TensorType) -> list[Shape]:
    """softmax: the operand's shape, along an axis it has."""
    rank = len(operands[0].shape)
    if not -rank <= attrs["axis"] < max(rank, 1):
        raise ShapeError(f"axis {attrs['axis']} is outside the operand's rank {rank}")
    return [operands[0].shape]


def batch_norm(operands: list[TensorType], attrs: dict[str, Any],
               result: TensorType) -> list[Shape]:
    """x[N,C,...] with scale, bias, mean, var of C elements each."""
    x = operands[0].shape
    if len(x) < 2:
        raise ShapeError(f"the operand must be at least 2-D, got {_shape_text(x)}")
    for what, ty in zip(("scale", "bias", "mean", "var"), operands[1:], strict=True):
        if ty.size != x[1]:
            raise ShapeError(f"{what} {_shape_text(ty.shape)} must have one element per "
                             f"channel ({x[1]})")
    return [x]


def conv(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """x[N,C,H,W], w[M,C/group,kh,kw], b[M]? -> [N,M,OH,OW]."""
    n, c, h, w = _rank(operands[0], 4, "input")
    m, cg, kh, kw = _rank(operands[1], 4, "weight")
    _positive(attrs, "strides", "dilations")
    group = attrs["group"]
    if group < 1 or c % group or m % group or cg != c // group:
        raise ShapeError(f"weight {_shape_text(operands[1].shape)} does not fit input "
                         f"{_shape_text(operands[0].shape)} with group={group}")
    if len(operands) > 2 and operands[2].size != m:
        raise ShapeError(f"bias {_shape_text(operands[2].shape)} must have {m} elements")
    windows = _windows((h, w), dict(attrs, kernel=[kh, kw]))
    return [(n, m, oh, ow) for oh, ow in windows]


def pool(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """max_pool, avg_pool: x[N,C,H,W] -> [N,C,OH,OW]."""
    n, c, h, w = _rank(operands[0], 4, "input")
    _positive(attrs, "kernel", "strides", "dilations")
    windows = _windows((h, w), attrs, bool(attrs.get("ceil_mode", 0)))
    return [(n, c, oh, ow) for oh, ow in windows]


def resize(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """x -> `sizes`: one size and one scale per axis of x."""
    rank = len(operands[0].shape)
    if len(attrs["sizes"]) != rank or len(attrs["scales"]) != rank:
        raise ShapeError(f"sizes and scales need one entry per axis of the rank-{rank} input")
    return [tuple(int(d) for d in attrs["sizes"])]


def global_pool(operands: list[TensorType], attrs: dict[str, Any],
                result: TensorType) -> list[Shape]:
    """x[N,C,...] -> [N,C,1,...]."""
    x = operands[0].shape
    if len(x) < 3:
        raise ShapeError(f"the input must be at least 3-D, got {_shape_text(x)}")
    return [x[:2] + (1,) * (len(x) - 2)]


def reduce_mean(operands: list[TensorType], attrs: dict[str, Any],
                result: TensorType) -> list[Shape]:
    x = operands[0].shape
    axes = {a % len(x) for a in attrs["axes"] if -len(x) <= a < len(x)}
    if len(axes) != len(attrs["axes"]):
        raise ShapeError(f"axes {attrs['axes']} must be distinct axes of {_shape_text(x)}")
    axes = axes or set(range(len(x)))  # ONNX: no axes reduces them all
    if attrs["keepdims"]:
        return [tuple(1 if i in axes else d for i, d in enumerate(x))]
    return [tuple(d for i, d in enumerate(x) if i not in axes)]


def gemm(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """x[M,K], w[N,K] (trans_b, the default) or w[K,N] -> [M,N]; x[K,M] with trans_a."""
    a = _rank(operands[0], 2, "input")
    b = _rank(operands[1], 2, "weight")
    m, k = a[::-1] if attrs.get("trans_a", 0) else a
    n, k_w = b if attrs.get("trans_b", 1) else b[::-1]
    if k != k_w:
        raise ShapeError(f"input {_shape_text(a)} and weight {_shape_text(b)} differ in K "
                         f"({k} and {k_w})")
    if len(operands) > 2:
        bias = operands[2].shape
        try:
            fits = np.broadcast_shapes(bias, (m, n)) == (m, n)
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"bias {_shape_text(bias)} does not broadcast to [{m},{n}]")
    return [(m, n)]


def matmul(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """numpy matmul: a[...,M,K] b[...,K,N] -> [...,M,N]; a 1-D side loses its dimension."""
    a, b = operands[0].shape, operands[1].shape
    if not a or not b:
        raise ShapeError("matmul operands must be at least 1-D")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"operands {_shape_text(a)} and {_shape_text(b)} differ in K "
                         f"({a2[-1]} and {b2[-2]})")
    try:
        batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    except ValueError:
        raise ShapeError(f"batch dimensions of {_shape_text(a)} and {_shape_text(b)} "
                         "do not broadcast") from None
    return [batch + a2[-2:-1] * (len(a) > 1) + b2[-1:] * (len(b) > 1)]


def backend_dot(operands: list[TensorType], attrs: dict[str, Any],
                result: TensorType) -> list[Shape]:
    """dot: a[...,M,K] with b[...,N,K] (`rows` = 1) or b[...,K,N] -> [...,M,N]."""
    a, b = operands[0].shape, operands[1].shape
    if len(a) < 2 or len(b) != len(a):
        raise ShapeError(f"operands {_shape_text(a)} and {_shape_text(b)} are not two "
                         "matrices of one rank")
    if attrs["rows"]:
        b = (*b[:-2], b[-1], b[-2])
    return matmul([operands[0], TensorType(b, operands[1].dtype)], attrs, result)


def concat(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """Operands equal but along `axis`, where their sizes add up."""
    first = operands[0].shape
    rank = len(first)
    if not -rank <= attrs["axis"] < rank:
        raise ShapeError(f"axis {attrs['axis']} is outside the operands' rank {rank}")
    axis = attrs["axis"] % rank
    outside = [d for i, d in enumerate(first) if i != axis]
    for ty in operands[1:]:
        if len(ty.shape) != rank or [d for i, d in enumerate(ty.shape) if i != axis] != outside:
            raise ShapeError(f"operands {_shape_text(first)} and {_shape_text(ty.shape)} "
                             f"differ outside axis {axis}")
    total = sum(ty.shape[axis] for ty in operands)
    return [first[:axis] + (total,) + first[axis + 1:]]


def same_size(operands: list[TensorType], attrs: dict[str, Any],
              result: TensorType) -> list[Shape]:
    """reshape, view: any shape with the operand's element count (reshape: its `shape`)."""
    wanted = attrs.get("shape")
    if wanted is not None and all(d >= 0 for d in wanted) \
            and math.prod(wanted) == operands[0].size:
        return [tuple(wanted)]
    if result.size == operands[0].size:
        return [result.shape]
    raise ShapeError(f"the operand has {operands[0].size} elements "
                     f"({_shape_text(operands[0].shape)}), the result {result.size} "
                     f"({_shape_text(result.shape)})")


def conv_transpose(operands: list[TensorType], attrs: dict[str, Any],
                   result: TensorType) -> list[Shape]:
    """x[N,C,H,W], w[C, M/group, kh, kw] -> [N, M, s(H-1) + d(kh-1) + 1 - pads, ...] (the end
    pads may be negative: ONNX's output_padding)."""
    n, c, h, w = _rank(operands[0], 4, "input")
    cw, m, kh, kw = _rank(operands[1], 4, "weight")
    group = attrs["group"]
    if cw != c or group < 1 or c % group:
        raise ShapeError(f"weight {_shape_text(operands[1].shape)} does not fit "
                         f"{c} input channels in {group} groups")
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = attrs["strides"], attrs["dilations"], attrs["pads"]
    return [(n, m * group, sh * (h - 1) + dh * (kh - 1) + 1 - pt - pb,
             sw * (w - 1) + dw * (kw - 1) + 1 - pl - pr)]


def take(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """take: the operand's shape but along `axes`, whose lengths are those of their maps
    (laid one after another in `index`), each entry -1 or a position of the operand."""
    x = operands[0].shape
    axes = [int(a) for a in attrs["axes"]]
    if len(set(axes)) != len(axes) or any(not 0 <= a < len(x) for a in axes):
        raise ShapeError(f"axes {axes} are not distinct axes of the operand {_shape_text(x)}")
    if len(result.shape) != len(x):
        return [x]
    shape = [result.shape[a] if a in axes else d for a, d in enumerate(x)]
    index = attrs["index"]
    if len(index) != sum(shape[a] for a in axes):
        raise ShapeError(f"index has {len(index)} entries, not the {sum(shape[a] for a in axes)} "
                         f"of the result along axes {axes}")
    start = 0
    for a in axes:
        part = index[start:start + shape[a]]
        start += shape[a]
        if any(not -1 <= i < x[a] for i in part):
            raise ShapeError(f"the map of axis {a} reads outside its {x[a]} positions")
    return [tuple(shape)]


def backend_gather(operands: list[TensorType], attrs: dict[str, Any],
                   result: TensorType) -> list[Shape]:
    """gather: runtime images and a last operand, the index [OH, OW*N] of the result."""
    oh, ow, n = _image(result, "result")
    if operands[-1].shape != (oh, ow * n):
        raise ShapeError(f"the index is {_shape_text(operands[-1].shape)}, not "
                         f"{_shape_text((oh, ow * n))}")
    for ty in operands[:-1]:
        _image(ty, "operand")
    return [result.shape]


def transpose(operands: list[TensorType], attrs: dict[str, Any],
              result: TensorType) -> list[Shape]:
    x = operands[0].shape
    perm = list(attrs["perm"])
    if sorted(perm) != list(range(len(x))):
        raise ShapeError(f"perm {perm} is not a permutation of the operand's "
                         f"{len(x)} axes")
    return [tuple(x[p] for p in perm)]


def _image(ty: TensorType, what: str) -> tuple[int, int, int]:
    """(H, W, C) of a backend activation: [1,C,H,W]; [1,K] (a 1x1 image); tokens [1,T,D]
    or [T,D] (one row of T pixels), the states [dirs,1,H] of a recurrent layer (dirs
    tokens), as cimc.dialect.chip.image_dims."""
    if len(ty.shape) == 4 and ty.shape[0] == 1:
        return ty.shape[2], ty.shape[3], ty.shape[1]
    if len(ty.shape) == 3:
        return 1, ty.shape[0] * ty.shape[1], ty.shape[2]
    if len(ty.shape) == 2:
        return 1, ty.shape[0], ty.shape[1]
    raise ShapeError(f"the {what} must be [1,C,H,W], [1,K], [A,T,D] or [T,D], got "
                     f"{_shape_text(ty.shape)}")


def _as_image(result: TensorType, channels: int, windows: list[Shape]) -> list[Shape]:
    """Result shapes for (OH, OW) windows: [1,C,OH,OW], or where the result is tokens (a
    row, OH = 1) [OW,C] or [1,OW,C] ([1,C] for one pixel)."""
    rows = [ow for oh, ow in windows if oh == 1]
    if len(result.shape) == 2:
        return [(ow, channels) for ow in rows] or [(1, channels, *windows[0])]
    if len(result.shape) == 3:
        return [(1, ow, channels) for ow in rows] or [(1, channels, *windows[0])]
    return [(1, channels, oh, ow) for oh, ow in windows]


def matvec(operands: list[TensorType], attrs: dict[str, Any], result: TensorType) -> list[Shape]:
    """x image, weights[kh*kw*C, N] -> [1,N,OH,OW] (or [1,N] for a 1x1 result)."""
    h, w, c = _image(operands[0], "input")
    _positive(attrs, "kernel", "strides", "dilations")
    rows, n = _rank(operands[1], 2, "weights")
    kh, kw = attrs["kernel"]
    if rows != kh * kw * c:
        raise ShapeError(f"weights have {rows} rows but a {kh}x{kw} window over {c} "
                         f"channels reads {kh * kw * c}")
    return _as_image(result, n, _windows((h, w), attrs))


def backend_pool(operands: list[TensorType], attrs: dict[str, Any],
                 result: TensorType) -> list[Shape]:
    """pool: x image -> [1,C,OH,OW] (lower widens the pads to cover ceil_mode windows)."""
    h, w, c = _image(operands[0], "input")
    _positive(attrs, "kernel", "strides", "dilations")
    return _as_image(result, c, _windows((h, w), attrs))


RECURRENT_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def recurrent_results(x: Shape, attrs: dict[str, Any]) -> tuple[Shape, Shape]:
    """The shapes of Y and of the last state (Y_h, and Y_c of an LSTM) of a recurrent op
    over x [T,N,D] (`layout` 0) or [N,T,D] (`layout` 1), as ONNX gives them."""
    dirs = RECURRENT_DIRECTIONS.get(attrs["direction"])
    if dirs is None:
        raise ShapeError(f"direction {attrs['direction']!r} is not one of "
                         f"{', '.join(RECURRENT_DIRECTIONS)}")
    if len(x) != 3:
        raise ShapeError(f"the input must be 3-D, got {_shape_text(x)}")
    hidden = attrs["hidden_size"]
    if attrs.get("layout", 0):
        n, t = x[0], x[1]
        return (n, t, dirs, hidden), (n, dirs, hidden)
    t, n = x[0], x[1]
    return (t, dirs, n, hidden), (dirs, n, hidden)


def recurrent(gates: int) -> ShapeRule:
    """lstm (4 gates), gru (3), rnn (1): x, w[dirs,gates*H,D], r[dirs,gates*H,H],
    b[dirs,2*gates*H], the initial states [dirs,N,H] (layout 0) and an LSTM's peepholes
    p[dirs,3*H] -> Y."""

    def rule(operands: list[TensorType], attrs: dict[str, Any],
             result: TensorType) -> list[Shape]:
        y, state = recurrent_results(operands[0].shape, attrs)
        dirs, hidden = state[-2] if attrs.get("layout", 0) else state[0], state[-1]
        d = operands[0].shape[2]
        expected = [(dirs, gates * hidden, d), (dirs, gates * hidden, hidden),
                    (dirs, 2 * gates * hidden)] + [state] * (len(operands) - 4)
        if gates == 4:  # the peepholes follow the two initial states
            expected[-1] = (dirs, 3 * hidden)
        names = ["w", "r", "b", "initial h", "initial c", "peepholes"]
        for name, ty, shape in zip(names, operands[1:], expected, strict=False):
            if ty.shape != shape:
                raise ShapeError(f"{name} is {_shape_text(ty.shape)}, expected "
                                 f"{_shape_text(shape)} for input {_shape_text(operands[0].shape)}"
                                 f" and hidden_size {hidden}")
        return [y]

    return rule
