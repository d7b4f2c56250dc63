"""ONNX layout ops that pick elements, imported as `take` (cimc/reference/movement.py):
Pad, Slice, Split (one take per output), Resize and Upsample in nearest mode. Each
becomes a map per axis from result positions to operand positions (-1: the fill
value), computed here once from the node's attributes and constant inputs."""

from __future__ import annotations

import math
from typing import Any

from cimc.frontend.build import UNSUPPORTED_FORMS, Converter, NodeImport
from cimc.frontend.resize import axis_scales, interpolated, text_attr
from cimc.reference.resize import source_coordinates


def _emit_take(ctx: NodeImport, maps: dict[int, list[int]], fill: float = 0.0,
               output: int = 0) -> None:
    """A take of input 0 by the per-axis `maps` (identity maps left out); an identity
    altogether is an `identity`."""
    x = ctx.type(0).shape
    moved = {a: m for a, m in sorted(maps.items()) if list(m) != list(range(x[a]))}
    result = ctx.node.output[output]
    name = ctx.name if output == 0 else ctx.fresh(f"out{output}")
    if not moved:
        ctx.emit("identity", [ctx.operand(0)], result=result, name=name)
        return
    attrs: dict[str, Any] = {"axes": list(moved),
                             "index": [int(i) for m in moved.values() for i in m]}
    if any(i < 0 for m in moved.values() for i in m):
        attrs["fill"] = float(fill)
    ctx.emit("take", [ctx.operand(0)], attrs, result=result, name=name)


def _ints(ctx: NodeImport, index: int, what: str) -> list[int]:
    return [int(v) for v in ctx.constant(index, what).reshape(-1)]


def _axes(ctx: NodeImport, index: int, rank: int) -> list[int]:
    """The `axes` input (or attribute) made non-negative; all axes when absent."""
    if ctx.has_input(index):
        return [a % rank for a in _ints(ctx, index, "axes")]
    if "axes" in ctx.attrs:
        return [int(a) % rank for a in ctx.attrs["axes"]]
    return list(range(rank))


def pad_map(size: int, before: int, after: int, mode: str) -> list[int]:
    """Operand positions of a padded (or, for negative pads, cropped) axis."""
    found = []
    for o in range(size + before + after):
        i = o - before
        if 0 <= i < size:
            found.append(i)
        elif mode == "constant":
            found.append(-1)
        elif mode == "edge":
            found.append(min(max(i, 0), size - 1))
        elif mode == "wrap":
            found.append(i % size)
        else:  # reflect: mirror about the edges, the edge itself not repeated
            period = 2 * (size - 1)
            j = abs(i) % period if period else 0
            found.append(j if j < size else period - j)
    return found


def pad(ctx: NodeImport) -> None:
    shape = ctx.type(0).shape
    rank = len(shape)
    mode = text_attr(ctx, "mode", "constant")  # one of `_pad_form`'s
    if ctx.has_input(1):
        pads = _ints(ctx, 1, "pads")
    else:
        pads = [int(p) for p in ctx.attrs.get("pads", [])]
    axes = _axes(ctx, 3, rank)
    if len(pads) != 2 * len(axes):
        raise ctx.error(f"{len(pads)} pads for {len(axes)} axes")
    fill = 0.0
    if ctx.has_input(2):
        fill = float(ctx.constant(2, "constant value").reshape(-1)[0])
    elif "value" in ctx.attrs:
        fill = float(ctx.attrs["value"])
    maps = {}
    for k, a in enumerate(axes):
        before, after = pads[k], pads[k + len(axes)]
        if mode == "reflect" and (before >= shape[a] or after >= shape[a]):
            raise ctx.error(f"reflect padding of {before}, {after} on an axis of {shape[a]}")
        maps[a] = pad_map(shape[a], before, after, mode)
    _emit_take(ctx, maps, fill)


def slice_(ctx: NodeImport) -> None:
    shape = ctx.type(0).shape
    rank = len(shape)
    if ctx.has_input(1):
        starts, ends = _ints(ctx, 1, "starts"), _ints(ctx, 2, "ends")
        axes = _axes(ctx, 3, rank)[:len(starts)] if ctx.has_input(3) else list(range(len(starts)))
        steps = _ints(ctx, 4, "steps") if ctx.has_input(4) else [1] * len(starts)
    else:  # Slice-1: attributes
        starts = [int(v) for v in ctx.attrs["starts"]]
        ends = [int(v) for v in ctx.attrs["ends"]]
        axes = [int(a) % rank for a in ctx.attrs.get("axes", range(len(starts)))]
        steps = [1] * len(starts)
    if any(s == 0 for s in steps):
        raise ctx.error("a slice step of 0")
    maps = {a: list(range(shape[a]))[slice(s, e, st)]
            for a, s, e, st in zip(axes, starts, ends, steps, strict=True)}
    _emit_take(ctx, maps)


def split(ctx: NodeImport) -> None:
    shape = ctx.type(0).shape
    axis = int(ctx.attrs.get("axis", 0)) % len(shape)
    outputs = len(ctx.node.output)
    sizes = [ctx.result_type(k).shape[axis] for k in range(outputs)]
    start = 0
    for k, size in enumerate(sizes):
        if ctx.node.output[k]:
            _emit_take(ctx, {axis: list(range(start, start + size))}, output=k)
        start += size


def nearest_map(size: int, out: int, scale: float, transform: str, rounding: str) -> list[int]:
    """Operand positions of a nearest-resized axis: the source coordinate of each result
    position (cimc.reference.resize.source_coordinates), rounded by `rounding` (a
    coordinate on an element is that element), clamped to the axis."""
    found = []
    for orig in source_coordinates(size, out, scale, transform):
        low = math.floor(orig)
        ratio = orig - low
        if ratio == 0:
            pick = low
        elif rounding == "round_prefer_floor":
            pick = low + (ratio > 0.5)
        elif rounding == "round_prefer_ceil":
            pick = low + (ratio >= 0.5)
        else:
            pick = low + (rounding == "ceil")
        found.append(min(max(pick, 0), size - 1))
    return found


TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
              "asymmetric", "tf_half_pixel_for_nn")
ROUNDINGS = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def resize(ctx: NodeImport) -> None:
    """Resize (opset 18 and on, to which older models are converted) and Upsample: nearest
    as a take; linear and cubic as the float `resize` (cimc/frontend/resize.py).
    `_resize_form` names the forms refused before import."""
    mode = text_attr(ctx, "mode", "nearest")
    if mode != "nearest":
        interpolated(ctx, mode)
        return
    shape, result = ctx.type(0).shape, ctx.result_type().shape
    if ctx.op_type == "Upsample":
        transform, rounding = "asymmetric", "floor"
    else:
        transform = text_attr(ctx, "coordinate_transformation_mode", "half_pixel")
        rounding = text_attr(ctx, "nearest_mode", "round_prefer_floor")
        if rounding not in ROUNDINGS:
            raise ctx.error(f"nearest_mode {rounding!r} is not supported")
    axes, scales = axis_scales(ctx)
    maps = {a: nearest_map(shape[a], result[a], scales[k], transform, rounding)
            for k, a in enumerate(axes)}
    _emit_take(ctx, maps)


def gather(ctx: NodeImport) -> None:
    """Gather of constant indices (torch's `y[:, -1]`): a take along the axis, negative
    positions counted from the end; a scalar index then drops the axis (a reshape)."""
    x = ctx.type(0)
    axis = int(ctx.attrs.get("axis", 0)) % len(x.shape)
    indices = ctx.constant(1, "indices")
    if indices.ndim > 1:
        raise ctx.error(f"indices of rank {indices.ndim} are not supported (a scalar or a "
                        "list of positions)")
    size = x.shape[axis]
    flat = [int(i) for i in indices.reshape(-1)]
    if any(not -size <= i < size for i in flat):
        raise ctx.error(f"indices {flat} lie outside axis {axis} of {list(x.shape)}")
    positions = [i % size for i in flat]
    if indices.ndim == 1:
        _emit_take(ctx, {axis: positions})
        return
    kept = list(x.shape)
    kept[axis] = 1
    taken = ctx.emit("take", [ctx.operand(0)], {"axes": [axis], "index": positions},
                     result=ctx.fresh("taken"), result_type=ctx.result_type().with_shape(kept),
                     name=ctx.fresh("take"))
    ctx.emit("reshape", [taken], {"shape": list(ctx.result_type().shape)})


def conv_transpose(ctx: NodeImport) -> None:
    """ConvTranspose of [N,C,H,W]: `conv_transpose` {strides, dilations, group, pads}, the
    pads the begin padding (as onnx's reference derives it from auto_pad and
    output_shape) then the end padding that gives the result's size (output_padding
    lowers it, so it may be negative); canonicalize makes it zero insertion and a conv."""
    x, w, y = ctx.type(0).shape, ctx.type(1).shape, ctx.result_type().shape
    if len(x) != 4:
        raise ctx.error(f"only 2-D ConvTranspose on [N,C,H,W] tensors is supported, not rank "
                        f"{len(x)}")
    kernel = [int(k) for k in w[2:]]
    strides = [int(s) for s in ctx.attrs.get("strides", [1, 1])]
    dilations = [int(d) for d in ctx.attrs.get("dilations", [1, 1])]
    extra = [int(p) for p in ctx.attrs.get("output_padding", [0, 0])]
    auto_pad = text_attr(ctx, "auto_pad", "NOTSET")
    natural = [strides[i] * (x[i + 2] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
               for i in range(2)]
    if "pads" in ctx.attrs or auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        begin = [int(p) for p in ctx.attrs.get("pads", [0, 0, 0, 0])][:2]
    else:
        total = [natural[i] - y[i + 2] for i in range(2)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    end = [natural[i] - extra[i] - y[i + 2] - begin[i] for i in range(2)]
    operands = [ctx.operand(i) for i in range(3) if ctx.has_input(i)]
    ctx.emit("conv_transpose", operands,
             {"strides": strides, "dilations": dilations, "group": int(ctx.attrs.get("group", 1)),
              "pads": [*begin, *end]})


def _resize_form(attrs: dict[str, Any]) -> str | None:
    mode = attrs.get("mode", "nearest")
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest" and transform not in TRANSFORMS:
        return f"nearest with coordinate_transformation_mode {transform!r} is not supported"
    if mode not in ("nearest", "linear", "cubic"):
        return f"mode {mode!r} is not supported"
    return None


def _pad_form(attrs: dict[str, Any]) -> str | None:
    mode = attrs.get("mode", "constant")
    return None if mode in ("constant", "reflect", "edge", "wrap") else \
        f"pad mode {mode!r} is not supported"


UNSUPPORTED_FORMS.update({"Resize": _resize_form, "Upsample": _resize_form, "Pad": _pad_form})

MOVEMENT_CONVERTERS: dict[str, Converter] = {
    "ConvTranspose": conv_transpose,
    "Gather": gather,
    "Pad": pad,
    "Slice": slice_,
    "Split": split,
    "Resize": resize,
    "Upsample": resize,
}

__all__ = ["MOVEMENT_CONVERTERS", "nearest_map", "pad_map"]
