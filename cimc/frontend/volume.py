"""3-D pooling over [N, C, D, H, W] as two 2-D pools: a box pool is separable. Pool each
depth slice over (H, W) as an image of N x C*D channels, then pool over D with a window
of one column, each (H, W) position a column of its own:

    [N, C, D, H, W] -> [N, C*D, H, W] -> pool (kh, kw) -> [N, C*D, H', W']
                    -> [N, C, D, H'*W'] -> pool (kd, 1) -> [N, C, D', H'*W'] -> [N, C, D', H', W']

The reshapes keep the elements in order. A maximum over a box is the maximum over D of
the maxima over (H, W). An average is too, because a window's divisor is the product of
its extents along each axis (padding and ceil_mode count per axis), and every (H, W)
average in one depth window has the same divisor.
"""

from __future__ import annotations

from typing import Any

from cimc.frontend.build import NodeImport


def pool_3d(ctx: NodeImport, kind: str, window: dict[str, Any]) -> None:
    """Emit `kind` (max_pool, avg_pool) over a 3-D `window` (kernel, strides, dilations of
    3; pads [d0, h0, w0, d1, h1, w1]) as two 2-D pools of the node's input."""
    x, ty, result = ctx.operand(0), ctx.type(0), ctx.result_type()
    n, c, d, h, w = ty.shape
    d_out, h_out, w_out = result.shape[2:]
    kd, kh, kw = window["kernel"]
    sd, sh, sw = window["strides"]
    dd, dh, dw = window["dilations"]
    d0, h0, w0, d1, h1, w1 = window["pads"]
    rest = {key: value for key, value in window.items()
            if key not in ("kernel", "strides", "dilations", "pads")}
    dilated = kind == "max_pool" or (dh, dw, dd) != (1, 1, 1)

    def step(value: str, shape: tuple[int, ...], suffix: str, op: str,
             attrs: dict[str, Any] | None = None) -> str:
        return ctx.emit(op, [value], attrs or {"shape": list(shape)},
                        result=ctx.fresh(suffix), result_type=ty.with_shape(shape),
                        name=ctx.fresh(suffix))

    slices = step(x, (n, c * d, h, w), "slices", "reshape")
    planes = step(slices, (n, c * d, h_out, w_out), "plane_pool", kind, {
        "kernel": [kh, kw], "strides": [sh, sw], "pads": [h0, w0, h1, w1],
        **({"dilations": [dh, dw]} if dilated else {}), **rest})
    columns = step(planes, (n, c, d, h_out * w_out), "columns", "reshape")
    depth = step(columns, (n, c, d_out, h_out * w_out), "depth_pool", kind, {
        "kernel": [kd, 1], "strides": [sd, 1], "pads": [d0, 0, d1, 0],
        **({"dilations": [dd, 1]} if dilated else {}), **rest})
    ctx.emit("reshape", [depth], {"shape": list(result.shape)})
