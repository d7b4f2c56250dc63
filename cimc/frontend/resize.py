"""ONNX Resize and Upsample in linear or cubic mode as the IR's `resize` (float only:
each result element mixes several input elements, which no integer op of the chip
does). The scales, sizes and region of interest given for some axes become one entry
per axis of the input."""

from __future__ import annotations

from typing import Any

from cimc.frontend.build import NodeImport
from cimc.reference.resize import TRANSFORMS


def text_attr(ctx: NodeImport, key: str, default: str) -> str:
    value = ctx.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def axis_scales(ctx: NodeImport) -> tuple[list[int], list[float]]:
    """The axes Resize resizes and the scale of each (from `scales`, or from `sizes` and
    `keep_aspect_ratio_policy`); Upsample resizes every axis by its `scales`."""
    shape = ctx.type(0).shape
    rank = len(shape)
    if ctx.op_type == "Upsample":
        given = ctx.constant(1, "scales") if ctx.has_input(1) else ctx.attrs["scales"]
        return list(range(rank)), [float(s) for s in list(given)]
    axes = [int(a) % rank for a in ctx.attrs.get("axes", range(rank))]
    if ctx.has_input(2) and ctx.constant(2, "scales").size > 0:
        return axes, [float(s) for s in ctx.constant(2, "scales").reshape(-1)]
    sizes = [int(s) for s in ctx.constant(3, "sizes").reshape(-1)]
    scales = [sizes[k] / shape[a] for k, a in enumerate(axes)]
    policy = text_attr(ctx, "keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":  # one scale for all the axes, the result within (or around) sizes
        scales = [(min if policy == "not_larger" else max)(scales)] * len(axes)
    return axes, scales


def interpolated(ctx: NodeImport, mode: str) -> None:
    """Emit `resize` for a linear or cubic Resize."""
    shape, result = ctx.type(0).shape, ctx.result_type().shape
    rank = len(shape)
    transform = ("asymmetric" if ctx.op_type == "Upsample" else
                 text_attr(ctx, "coordinate_transformation_mode", "half_pixel"))
    if transform not in TRANSFORMS:
        raise ctx.error(f"coordinate_transformation_mode {transform!r} is not supported")
    axes, given = axis_scales(ctx)
    scales = [1.0] * rank
    for k, a in enumerate(axes):
        scales[a] = given[k]
    attrs: dict[str, Any] = {
        "mode": mode, "scales": scales, "sizes": list(result),
        "coordinate_transformation_mode": transform,
        "cubic_coeff_a": float(ctx.attrs.get("cubic_coeff_a", -0.75)),
        "exclude_outside": int(ctx.attrs.get("exclude_outside", 0)),
        "antialias": int(ctx.attrs.get("antialias", 0)),
        "extrapolation_value": float(ctx.attrs.get("extrapolation_value", 0.0)),
    }
    if transform == "tf_crop_and_resize":
        roi = [float(v) for v in ctx.constant(1, "roi").reshape(-1)]
        starts, ends = [0.0] * rank, [1.0] * rank
        for k, a in enumerate(axes):
            starts[a], ends[a] = roi[k], roi[len(axes) + k]
        attrs["roi"] = starts + ends
    ctx.emit("resize", [ctx.operand(0)], attrs)
