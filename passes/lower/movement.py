"""Layout ops as data movement: reshape, transpose, take (Pad, Slice, Split, Resize
nearest) and concat become `gather` ops, each output byte one operand byte or the fill
code (the chip's `vgather`; band geometry in cimc/analysis/gather.py).

Chains of layout ops lower to one gather: a layout op whose result only other layout
ops read, in its quantization, is *fused* into its readers (the ShuffleNet channel
shuffle, reshape [1,C,H,W] -> [1,g,C/g,H,W] -> transpose -> reshape, is one gather
of the [1,C,H,W] image, and a concat feeding it joins it). The others are
*materialized*: a model output, read by another kind of op, or read by an op that
requantizes it. Each materialized op's index follows by running the chain's ops on an
array of positions: a materialized source of shape [1,C,H,W] (or [1,K]) starts as the
NHWC byte offset of every element (plus the sizes of the sources before it), and
reshape, transpose, take (-1 where it fills) and concat move those positions exactly
as the reference moves values (cimc/reference/layout.py, movement.py).

What is not a gather: a channel concat of materialized images becomes the chip's
`join` (lower_concat); a chain that leaves the bytes in place in an image of the same rows,
pixels and channels (a squeeze, [1,C,1,1] -> [1,C], a transpose of unit axes)
becomes a `view`; a reshape of an image read only by gemms stays (the
gemm reads the image, passes/lower/__init__.py). Integer semantics: codes move
unchanged; an operand quantized unlike the op reading it goes through a `rescale` to
the op's quantization first (the reference requantizes it there).
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op, TensorType
from cimc.reference.movement import axis_maps, fill_code, take_values
from cimc.reference.requant import MAX_SHIFT, fixed_point

LAYOUT = ("reshape", "transpose", "take", "concat")


def _same_quant(a: TensorType, b: TensorType) -> bool:
    return a.quant == b.quant and a.dtype == b.dtype


def _gemm_flatten(module: Module, op: Op) -> bool:
    """A reshape of an image only gemms read: the gemm reads the image through it."""
    return (op.kind == "reshape" and op.outputs[0] not in module.outputs
            and _is_image(module.values[op.inputs[0]])
            and all(c.kind == "gemm" for c in module.consumers(op.outputs[0])))


def _is_image(ty: TensorType) -> bool:
    try:
        image_dims(ty)
    except ValueError:
        return False
    return True


def lower_layout(module: Module, candidates: set[str]) -> None:
    """Rewrite the quantized layout ops named in `candidates` (the ops `lower` puts on the
    chip) into gathers or views; a channel concat of images is left to `lower_concat`,
    a reshape read only by gemms to `lower_matvec`, and fused ops die."""
    ops = [op for op in module.ops() if op.kind in LAYOUT and op.name in candidates
           and module.values[op.outputs[0]].is_quantized]
    layout = {op.name for op in ops}
    fused: set[str] = set()
    clean: set[str] = set()  # fused or not: no fill, no requantization, nor above it
    for op in ops:  # producers first
        if _clean(module, op, fused, clean):
            clean.add(op.name)
        if _fuses(module, op, layout, op.name in clean):
            fused.add(op.name)
    for op in ops:
        if op.name not in fused and not _gemm_flatten(module, op):
            _materialize(module, op, fused)
    module.remove_dead()


def _clean(module: Module, op: Op, fused: set[str], clean: set[str]) -> bool:
    """Whether `op` and the fused ops above it only select codes: no fill, no
    requantization (then a reader may requantize them all at once, at their sources)."""
    if op.kind == "take" and any(i < 0 for i in op.attrs["index"]):
        return False
    result = module.values[op.outputs[0]]
    for v in op.inputs:
        producer = module.producer(v)
        if not _same_quant(module.values[v], result) or (
                producer is not None and producer.name in fused and producer.name not in clean):
            return False
    return True


def _fuses(module: Module, op: Op, layout: set[str], clean: bool) -> bool:
    """Whether `op` is computed only inside the gathers of its readers: they are all
    quantized layout ops the chip runs (`layout`), which keep its quantization or
    (`clean`) requantize it at its sources."""
    value = op.outputs[0]
    if value in module.outputs or not module.consumers(value):
        return False
    ty = module.values[value]
    return all(c.name in layout and not _gemm_flatten(module, c)
               and (clean or _same_quant(module.values[c.outputs[0]], ty))
               for c in module.consumers(value))


class _Sources:
    """The materialized tensors a gather reads, each at a base offset."""

    def __init__(self, module: Module, op: Op) -> None:
        self.module, self.op = module, op
        self.values: list[str] = []
        self.bases: list[int] = []
        self.end = 0

    def positions(self, value: str, reader: Op, to: TensorType | None) -> np.ndarray:
        """Byte positions of `value`'s elements (IR shape) in the gather's sources,
        `value` requantized to `to` first where they differ (`reader` reads it)."""
        module = self.module
        if to is not None:
            value = _requantized(module, value, to, reader)
        ty = module.values[value]
        if module.is_constant(value) or not _is_image(ty):
            what = "a constant" if module.is_constant(value) else f"shape {list(ty.shape)}"
            raise CimcError(f"op {self.op.name!r} ({self.op.kind}): its data comes from "
                            f"{value!r}, {what}; the chip moves data between images "
                            "[1,C,H,W] or [1,K]")
        if value not in self.values:
            self.values.append(value)
            self.bases.append(self.end)
            self.end += ty.size
        base = self.bases[self.values.index(value)]
        h, w, c = image_dims(ty)
        nhwc = np.arange(h * w * c, dtype=np.int64).reshape(h, w, c) + base
        if len(ty.shape) != 4:  # [1,K] and tokens [1,T,D], [T,D]: row-major is NHWC
            return nhwc.reshape(ty.shape)
        return nhwc.transpose(2, 0, 1).reshape(ty.shape)


def _positions(module: Module, value: str, reader: Op, fused: set[str], sources: _Sources,
               fills: set[int], to: TensorType | None) -> np.ndarray:
    op = module.producer(value)
    if op is None or op.name not in fused:
        return sources.positions(value, reader, to)
    return _apply(module, op, fused, sources, fills, to)


def _apply(module: Module, op: Op, fused: set[str], sources: _Sources, fills: set[int],
           to: TensorType | None = None) -> np.ndarray:
    """The positions `op`'s result holds: its operands' positions moved as op moves data.
    `to`: the quantization a reader below requantizes to (ops above it only select)."""
    result = module.values[op.outputs[0]]
    args = [_positions(module, v, op, fused, sources, fills,
                       to if _same_quant(module.values[v], result) else result)
            for v in op.inputs]
    if op.kind == "reshape":
        return args[0].reshape(result.shape)
    if op.kind == "transpose":
        return np.transpose(args[0], op.attrs["perm"])
    if op.kind == "concat":
        return np.concatenate(args, axis=int(op.attrs["axis"]))
    maps = axis_maps(op.attrs["axes"], op.attrs["index"], result.shape)
    if any((m < 0).any() for m in maps.values()):  # (never below a requantization)
        fills.add(fill_code(float(op.attrs.get("fill", 0.0)), result))
    return take_values(args[0], maps, -1)


def _materialize(module: Module, op: Op, fused: set[str]) -> None:
    result = module.values[op.outputs[0]]
    if not _is_image(result):
        raise CimcError(f"op {op.name!r} ({op.kind}): its result {list(result.shape)} is not an "
                        "image [1,C,H,W] or [1,K], which is what the chip stores; only layout "
                        "ops in between may have other shapes")
    if op.kind == "concat" and int(op.attrs["axis"]) % len(result.shape) == 1 and all(
            (module.producer(v) is None or module.producer(v).name not in fused)  # type: ignore[union-attr]
            and _is_image(module.values[v]) and not module.is_constant(v) for v in op.inputs):
        return  # the chip's channel concat (lower_concat)
    sources, fills = _Sources(module, op), set[int]()
    positions = _apply(module, op, fused, sources, fills)
    if len(fills) > 1:
        raise CimcError(f"op {op.name!r} ({op.kind}): its layout ops fill with several codes "
                        f"({sorted(fills)}); the chip's gather fills with one")
    oh, ow, n = image_dims(result)
    if len(result.shape) == 4:
        index = positions[0].transpose(1, 2, 0).reshape(oh, ow * n)
    else:
        index = positions.reshape(oh, ow * n)
    # A view keeps the bytes and their image geometry, which rows and channel ranges
    # travel by (a [1,1,2,6] image viewed as [1,12] would be one row of 12 bytes where two
    # rows of 6 are sent; [1,1,3,2] as [1,2,3,1], rows of one pixel of 2 channels where
    # rows of 2 pixels of one channel are sent).
    whole = len(sources.values) == 1 \
        and image_dims(module.values[sources.values[0]]) == (oh, ow, n)
    if not fills and whole and (index.reshape(-1) == np.arange(index.size)).all():
        module.set_inputs(op, [sources.values[0]])
        op.kind, op.attrs = "view", {}
        return
    table = module.add_constant(module.fresh_name(f"{op.name}.index"), index.astype(np.int32))
    assert result.quant is not None
    fill = fills.pop() if fills else int(result.quant.zero_point[0])
    module.set_inputs(op, [*sources.values, table])
    op.kind, op.attrs = "gather", {"fill": fill}


def _requantized(module: Module, value: str, to: TensorType, reader: Op) -> str:
    """`value`, or a `rescale` of it to the quantization of `to` (one per value and
    quantization, shared by the gathers that read it so)."""
    ty = module.values[value]
    if _same_quant(ty, to):
        return value
    for quant, what in ((ty, "operand"), (to, "result")):
        if quant.quant is None or quant.quant.per_channel or quant.dtype not in ("i8", "u8"):
            raise CimcError(f"op {reader.name!r} ({reader.kind}): the {what} must be an 8-bit "
                            "tensor quantized per tensor")
    name = f"{value}.rescaled"
    for c in module.consumers(value):
        if c.kind == "rescale" and _same_quant(module.values[c.outputs[0]], to) \
                and c.name.startswith(name):
            return c.outputs[0]
    sx, zx = float(ty.quant.scale[0]), int(ty.quant.zero_point[0])  # type: ignore[union-attr]
    sy, zy = float(to.quant.scale[0]), int(to.quant.zero_point[0])  # type: ignore[union-attr]
    try:
        fixed = fixed_point(np.float64(sx) / np.float64(sy))
    except ValueError as exc:
        raise CimcError(f"op {reader.name!r} ({reader.kind}): operand scale {sx:g} / result "
                        f"scale {sy:g}: {exc}") from None
    # A multiplier too small for the mantissa keeps M = 1 at the largest shift (as lower's
    # own rescales do): M = 0 would mean 'clamp only'.
    mant, shift = (1, MAX_SHIFT) if int(fixed[0]) == 0 else (int(fixed[0]), int(fixed[1]))
    info = np.iinfo(to.numpy_dtype)  # the reference saturates, it applies no clamp
    rescale = module.add_op(
        "rescale", [value], [to.with_shape(ty.shape)], name=module.fresh_name(name),
        attrs={"zx": zx, "M": mant, "shift": shift, "zy": zy, "lo": int(info.min),
               "hi": int(info.max)})
    return rescale.outputs[0]
