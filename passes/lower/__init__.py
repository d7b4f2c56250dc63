"""lower: quantized ops become the backend's op kinds, constants precomputed.

After `fold-qdq` the module holds integer ops between a `quantize` at each
input and a `dequantize` at each output. `lower` rewrites every integer op
into one of the kinds the code generator knows, with everything the hardware
needs computed here once:

* `matvec(x, weights, bias, requant)` for `conv` and `gemm`: weights i8
  `[K, N]` with rows in window order `(group, ky, kx, cin)`, so grouped and
  depthwise convolutions are block-diagonal; bias i32 `[N]` =
  `b - zx * colsum(w)` because the crossbar multiplies raw codes and padding
  holds `zx` (clamped where the int32 accumulator could overflow, see
  `_int32_bias`); requant i32 `[N, 5]` rows `(M, shift, zy, lo, hi)`. A `gemm`
  reading a flattened image becomes a matvec whose kernel covers the whole
  image, its weight rows permuted from NCHW to the NHWC storage order.
* `pool(x)` {mode, kernel, strides, pads, dilations, offset, M, shift, zy, lo, hi}
  for max and average pools (max pools leave `M = 0`: codes pass unchanged).
* `eltwise(a, b)` {ma, mb, za, zb, M = 1, shift, zy, lo, hi} for add and sub.
* `rescale(x)` {zx, M, shift, zy, lo, hi} for requantize, relu and clip
  (`M = 0` when only the clamp applies).
* a `lut` (a quantized activation) becomes a last operand of the op computing its
  operand (matvec, pool, eltwise or rescale: its 256 codes in byte order, applied by `vlut`
  to the result codes), or a `rescale(x, lut)` {M = 0} of its own.
* a quantized `mul`, `add`, `sub` or `div` whose result is an element-wise function of
  one tensor x (HardSwish as `x * HardSigmoid(x)`, SiLU, `x / 6`) becomes a `lut` of x
  first, its table the reference kernels on the 256 codes of x (passes/lower/tables.py).
* `scale(x, factors)` {zx, M, shift, zy, lo, hi} for a `mul` by a constant that varies
  along the channels: `(x - zx) * factors[c]` (the constant's codes less its zero point,
  i32), requantized with `m = sx * sc / sy`.
* `product(a, b)` {za, zb, M, shift, zy, lo, hi} for a `mul` of two runtime tensors:
  `(a - za) * (b - zb)` requantized with `m = sa * sb / sy`, an operand possibly one row,
  one pixel or one channel broadcast over the other's (passes/lower/product.py).
* `dot(a, b)` {za, zb, M, shift, zy, lo, hi, rows} for a `matmul` of two runtime token
  matrices: `Σ_k (a - za)(b - zb)` requantized with `m = sa * sb / sy`, b read through a
  transpose of its last two axes (`rows = 1`) where it has one (passes/lower/attention.py);
  a matmul or softmax over several heads first one token matrix at a time
  (passes/lower/heads.py).
* `pixel_softmax(x, exp)` {P, zy, lo, hi} for a quantized softmax over each token's
  scores (passes/lower/softmax.py).
* `pixel_layernorm(x, bias, finish)` {zx, m, e, k, a, floor} for a quantized LayerNorm
  over each token's channels (passes/lower/layer_norm.py).
* `join(xs...)` for a concat along channels (an operand quantized unlike the result gets a
  `rescale` to it first), and `view(x)` for a reshape that keeps the NHWC byte
  order (a reshape that requantizes gets a `rescale` first, also when a gemm
  reads the image through it).
* `gather(xs..., index)` {fill} for the other layout ops (transpose, take, concat on
  other axes, reshapes that change the byte order), chains of them fused into one
  (passes/lower/movement.py).

`quantize` of a module input and `dequantize` of a result stay: they run on
the host. Float ops after the last `dequantize` also stay (host work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.chip import CHIP_KINDS, LUT_KINDS, image_dims, lut_table
from cimc.dialect.host import HOST_KINDS, host_float_ops
from cimc.ir.module import Module, Op, TensorType
from cimc.pass_base import Pass
from cimc.passes.lower.attention import fuse_transposed_operands, lower_matmul
from cimc.passes.lower.batch import unbatch
from cimc.passes.lower.common import bounds as _bounds
from cimc.passes.lower.common import checked_fixed_point as _fixed_point
from cimc.passes.lower.common import fixed as _fixed
from cimc.passes.lower.common import per_tensor as _per_tensor
from cimc.passes.lower.common import replace as _replace
from cimc.passes.lower.heads import split_heads
from cimc.passes.lower.host import (
    after_quantize,
    check_host_boundary,
    feeds_chip,
    pass_through_inputs,
    quantize_inputs_once,
)
from cimc.passes.lower.layer_norm import lower_layer_norm
from cimc.passes.lower.movement import lower_layout
from cimc.passes.lower.product import lower_product, two_tensors
from cimc.passes.lower.recurrent import unroll_recurrent
from cimc.passes.lower.sequence import lower_reduction
from cimc.passes.lower.softmax import lower_softmax
from cimc.passes.lower.tables import tabulate_functions_of_one_tensor
from cimc.reference.integer import add_multipliers
from cimc.reference.linear import INT32_MAX, INT32_MIN
from cimc.reference.pool import window_extents
from cimc.reference.requant import apply

# Kinds fold-qdq makes integer only in one form, and what to do when an op is not in it.
INTEGER_FORM = {"layer_norm": "the chip's integer LayerNorm works over the last axis of "
                              "tokens [1,T,D] with 8-bit codes in and out (docs/ir.md "
                              "'layer_norm'), so give it that form or end the model before it",
                "resize": "the chip resizes by nearest neighbour, or linearly by an integer "
                          "scale (2, 4) with half_pixel or asymmetric coordinates "
                          "(torch's align_corners=False); export the model so (cubic and "
                          "align_corners weights are not exact in integers) or end it before "
                          "this op"}


@dataclass
class Lower(Pass):
    name: ClassVar[str] = "lower"
    # A QDQ pattern left unfolded would be taken for float host work.
    requires: ClassVar[tuple[str, ...]] = ("fold-qdq",)

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        host_float = host_float_ops(module)
        for op in module.ops():
            if op.kind in RULES and op.kind not in CHIP_KINDS and op.name not in host_float:
                return f"op {op.name!r} ({op.kind}) is not lowered"
        return None

    def apply(self, module: Module) -> None:
        unbatch(module)
        unroll_recurrent(module)
        split_heads(module)
        for op in module.ops():
            ty = module.values[op.outputs[0]]
            if op.kind == "quantize" and ty.dtype not in ("i8", "u8"):
                raise CimcError(f"op {op.name!r} (quantize) makes {ty.dtype} codes; the chip "
                                "holds activations as 8-bit codes: quantize them to int8 or "
                                "uint8 (quantize_static's activation_type QInt8 or QUInt8)")
        quantize_inputs_once(module)
        pass_through_inputs(module)
        tabulate_functions_of_one_tensor(module)
        fuse_transposed_operands(module)
        host_float = host_float_ops(module)
        lower_layout(module, {op.name for op in module.ops()
                              if op.kind not in HOST_KINDS and op.name not in host_float})
        todo = [op for op in module.ops() if op.kind not in HOST_KINDS
                and op.name not in host_float
                and not (op.kind in CHIP_KINDS and op.kind not in RULES)]
        # An op the chip cannot run is named before any rewrite, so the error is about
        # it and not about a neighbour it left in an unusual shape.
        for op in todo:
            if not module.values[op.outputs[0]].is_quantized and feeds_chip(module, op):
                where = ("between integer layers" if after_quantize(module, op) else
                         "before the model's first QuantizeLinear (onnxruntime's quantizer "
                         "leaves ops that read the float input unquantized)")
                remedy = INTEGER_FORM.get(
                    op.kind, "so quantize this op (QDQ around it, as for its neighbours) or end "
                    "the model before it")
                raise CimcError(
                    f"op {op.name!r} ({op.kind}) computes in float {where}; "
                    "the chip runs only quantized ops and the host only the float tail after "
                    f"the last dequantize; {remedy}")
            if op.kind == "div" or (op.kind == "mul" and _channel_constant(module, op) is None
                                    and not two_tensors(module, op)):
                raise CimcError(f"op {op.name!r} ({op.kind}): the chip computes a {op.kind} "
                                "only as a function of one tensor (x * sigmoid(x), x / 6), "
                                "which it looks up in a table"
                                + (", by a per-channel constant or of two tensors"
                                   if op.kind == "mul" else "")
                                + "; this one combines "
                                + ("two tensors" if op.kind == "div" else
                                   "a tensor and a constant varying along more than the "
                                   "channels")
                                + ", which it cannot yet; end the model before it")
            if op.kind not in RULES:
                raise CimcError(f"op {op.name!r} ({op.kind}): the chip has no {op.kind}; it "
                                f"runs integer {', '.join(sorted(RULES))}: express this op "
                                "with those, or end the model before it (the host runs only "
                                "the float tail after the last DequantizeLinear)")
            wide = [v for v in [*op.inputs, *op.outputs] if not module.is_constant(v)
                    and module.values[v].dtype not in ("i8", "u8", "f32")]
            if wide:
                raise CimcError(f"op {op.name!r} ({op.kind}) computes on "
                                f"{module.values[wide[0]].dtype} tensor {wide[0]!r}; the chip "
                                "holds activations as 8-bit codes: quantize them to int8 or "
                                "uint8 (quantize_static's activation_type QInt8 or QUInt8)")
            if not module.values[op.outputs[0]].is_quantized:
                raise CimcError(f"op {op.name!r} ({op.kind}) is float, with no "
                                "QuantizeLinear/DequantizeLinear around it (onnxruntime's "
                                "quantizer leaves some ops float); the chip runs only "
                                "quantized ops: quantize the model with QDQ around this op, "
                                "or end the model before it")
        _check_batch(module, todo)
        check_host_boundary(module, {op.name for op in todo})
        for op in todo:
            RULES[op.kind](module, op)
        module.remove_dead()


def _check_batch(module: Module, ops: list[Op]) -> None:
    """The chip computes one image at a time: every tensor of `ops` has batch 1 (the
    states of a recurrent layer's directions, [dirs, 1, H], are its tokens)."""
    for op in ops:
        shape = module.values[op.outputs[0]].shape
        if op.kind != "reshape" and (len(shape) == 4 or (len(shape) == 3 and shape[1] != 1)) \
                and shape[0] != 1:
            raise CimcError(f"op {op.name!r} ({op.kind}) computes a batch of {shape[0]} "
                            f"({list(shape)}); the backend compiles one image at a time (run "
                            "and sim take several images stacked on axis 0): export the model "
                            "with batch 1, or with a dynamic batch pinned by --input-shape "
                            "NAME=1,...")


def lower_matvec(module: Module, op: Op) -> None:
    x, w_name = op.inputs[0], op.inputs[1]
    x_type, w_type, y_type = (module.values[v] for v in (x, w_name, op.outputs[0]))
    if not module.is_constant(w_name) or w_type.quant is None:
        raise CimcError(f"op {op.name!r} ({op.kind}): weights must be a quantized constant")
    if any(z != 0 for z in w_type.quant.zero_point):
        raise CimcError(f"op {op.name!r} ({op.kind}): weights must be quantized symmetrically "
                        "(zero point 0), as onnxruntime's quantizer does by default")
    sx, zx = _per_tensor(x_type, "input", op)
    _, zy = _per_tensor(y_type, "result", op)
    w = module.constants[w_name]
    # int8 weights stay int8 (int64 copies of ResNet-50's cost 200 MB); others, as before,
    # are summed exactly and stored wrapped to int8.
    dtype = np.int8 if w.dtype == np.int8 else np.int64
    attrs: dict[str, Any] = {k: list(op.attrs.get(k, d)) for k, d in
             (("strides", [1, 1]), ("pads", [0, 0, 0, 0]), ("dilations", [1, 1]))}
    group = int(op.attrs.get("group", 1))
    if op.kind == "gemm":
        source = module.producer(x)
        if source is not None and _flattens_an_image(module, source):
            # flatten of NCHW: read the image (requantized as the flatten does), permute the weights
            x = _rescaled(module, source, source.inputs[0], x_type)
            _, c, h, wd = module.values[x].shape
            w = w.reshape(w.shape[0], c, h, wd)
        else:
            w = w.reshape(w.shape[0], w.shape[1], 1, 1)
        group = 1
    n_out, cg, kh, kw = w.shape
    mg = n_out // group
    rows = kh * kw * cg
    weights = np.zeros((group * rows, n_out), dtype=dtype)
    for g in range(group):
        block = w[g * mg:(g + 1) * mg].transpose(2, 3, 1, 0).reshape(rows, mg)
        weights[g * rows:(g + 1) * rows, g * mg:(g + 1) * mg] = block
    bias = np.zeros(n_out, dtype=np.int64)
    if len(op.inputs) > 2:
        bias += module.constants[op.inputs[2]].astype(np.int64).reshape(-1)
    # Sums over each output channel's own weights: the matrix column holds them and zeros
    # (the other groups' rows), which would make the sums of a depthwise conv 100x slower.
    per_channel = w.reshape(n_out, -1)
    positive = np.maximum(per_channel, 0).sum(axis=1, dtype=np.int64)
    negative = np.minimum(per_channel, 0).sum(axis=1, dtype=np.int64)
    bias -= zx * (positive + negative)
    sw = np.broadcast_to(np.asarray(w_type.quant.scale, dtype=np.float64), (n_out,))
    sy = np.float64(y_type.quant.scale[0])  # type: ignore[union-attr]
    mant, shift = _fixed_point(op, np.float64(sx) * sw / sy,
                               f"input scale {sx:g} x weight scale {sw.max():g} / result scale "
                               f"{sy:g}")
    lo, hi = _bounds(op, y_type)
    table = np.stack([mant, shift, np.full(n_out, zy), np.full(n_out, lo), np.full(n_out, hi)], 1)
    bias = _int32_bias(op, (positive, negative), bias, np.iinfo(x_type.numpy_dtype), table)
    base = op.name
    names = [
        module.add_constant(module.fresh_name(f"{base}.weights"),
                            weights.astype(np.int8, copy=False)),
        module.add_constant(module.fresh_name(f"{base}.bias"), bias.astype(np.int32)),
        module.add_constant(module.fresh_name(f"{base}.requant"), table.astype(np.int32)),
    ]
    attrs.update(kernel=[kh, kw], group=group)
    _replace(module, op, "matvec", [x, *names], attrs)


def _requantized(acc: np.ndarray, table: np.ndarray) -> np.ndarray:
    """What `requant` makes of i32 accumulators, one per row `(M, shift, zy, lo, hi)`."""
    return np.clip(apply(acc, table[:, 0], table[:, 1]) + table[:, 2], table[:, 3], table[:, 4])


def _int32_bias(op: Op, sums: tuple[np.ndarray, np.ndarray], bias: np.ndarray, codes: np.iinfo,
                table: np.ndarray) -> np.ndarray:
    """The folded bias, made safe for the chip's int32 accumulator.

    The reference saturates the exact accumulator to int32 once (docs/ir.md);
    the chip's adders wrap. Where a channel's accumulator can leave int32 for
    some input (a huge bias), its result is the same for every input once
    saturated, so a bias clamped to keep the accumulator in range gives that
    same result; a channel whose result would still vary is reported.
    """
    # codes.min <= codes.max: a positive weight's extremes are w*min and w*max, a negative
    # one's the other way round; `sums` are each channel's positive and negative weights'.
    positive, negative = sums
    low = positive * codes.min + negative * codes.max
    high = positive * codes.max + negative * codes.min
    fits = (low + bias >= INT32_MIN) & (high + bias <= INT32_MAX)
    if fits.all():
        return bias
    clamped = np.clip(bias, INT32_MIN - low, INT32_MAX - high)
    want = [_requantized(np.clip(v + bias, INT32_MIN, INT32_MAX), table) for v in (low, high)]
    got = [_requantized(v + clamped, table) for v in (low, high)]
    for c in np.flatnonzero(~fits):
        constant = want[0][c] == want[1][c] == got[0][c] == got[1][c]
        if high[c] - low[c] > INT32_MAX - INT32_MIN or not constant:
            raise CimcError(
                f"op {op.name!r} ({op.kind}): the int32 accumulator of output channel {c} "
                f"overflows for some inputs (folded bias {int(bias[c])}) and its requantized "
                "result would depend on the saturation the chip's adders do not do; "
                "requantize the model with a bias that keeps the accumulator within int32")
    return clamped


def lower_pool(module: Module, op: Op) -> None:
    x_type, y_type = module.values[op.inputs[0]], module.values[op.outputs[0]]
    sx, zx = _per_tensor(x_type, "input", op)
    sy, zy = _per_tensor(y_type, "result", op)
    h, w, _ = image_dims(x_type)
    glob = op.kind.startswith("global_")
    kernel = [h, w] if glob else list(op.attrs["kernel"])
    pads = [0, 0, 0, 0] if glob else list(op.attrs.get("pads", [0, 0, 0, 0]))
    attrs: dict[str, Any] = {
        "kernel": kernel, "strides": [1, 1] if glob else list(op.attrs.get("strides", [1, 1])),
        "pads": pads, "dilations": [1, 1] if glob else list(op.attrs.get("dilations", [1, 1]))}
    oh, ow, _ = image_dims(y_type)
    reach_h = (oh - 1) * attrs["strides"][0] + attrs["dilations"][0] * (kernel[0] - 1) + 1
    reach_w = (ow - 1) * attrs["strides"][1] + attrs["dilations"][1] * (kernel[1] - 1) + 1
    # ceil_mode windows running past the bottom/right pads read pad values too.
    pads[2] = max(pads[2], reach_h - h - pads[0])
    pads[3] = max(pads[3], reach_w - w - pads[1])
    lo, hi = _bounds(op, y_type)
    if op.kind.endswith("max_pool"):
        attrs.update(mode="max", offset=0, M=0, shift=0, zy=zy, lo=lo, hi=hi)
        if x_type.quant != y_type.quant and _empty_window(attrs, (h, w), (oh, ow)):
            raise CimcError(f"op {op.name!r} ({op.kind}): a window lies wholly in the padding "
                            "and the pool requantizes (its result is the lowest code, which "
                            "the chip's rescale does not give); use smaller pads or "
                            "dilations, or the input's quantization for the result")
        if x_type.quant != y_type.quant:
            _split_rescale(module, op, attrs, x_type, sx, zx, sy, zy, lo, hi)
        else:
            _replace(module, op, "pool", [op.inputs[0]], attrs)
        return
    count = kernel[0] * kernel[1]
    rows, cols = window_extents(dict(op.attrs, kernel=kernel), (h, w), (oh, ow))
    attrs.update(mode="avg", offset=-count * zx, zy=zy, lo=lo, hi=hi)
    divisors = sorted({int(r * c) for r in rows for c in cols})
    if divisors == [count]:
        mant, shift = _fixed(op, np.float64(sx) / (np.float64(sy) * np.float64(count)),
                             f"input scale {sx:g} / (result scale {sy:g} x {count})")
        attrs.update(M=mant, shift=shift)
    else:
        # Windows at the border average fewer positions (count_include_pad=0, or ceil_mode
        # windows past the pads): the padding holds zx, so the sum is the same and only the
        # divisor changes; each distinct divisor has its own multiplier.
        pairs = [_fixed(op, np.float64(sx) / (np.float64(sy) * np.float64(d)),
                        f"input scale {sx:g} / (result scale {sy:g} x {d})") for d in divisors]
        attrs.update(M=pairs[-1][0], shift=pairs[-1][1], divisors=divisors,
                     divisor_M=[m for m, _ in pairs], divisor_shift=[s for _, s in pairs],
                     row_extents=[int(r) for r in rows], col_extents=[int(c) for c in cols])
    _replace(module, op, "pool", [op.inputs[0]], attrs)


def _empty_window(attrs: dict[str, Any], size: tuple[int, int], out: tuple[int, int]) -> bool:
    """Whether some window of a pool reads only padding (along either axis)."""
    for axis in (0, 1):
        k, s, d = attrs["kernel"][axis], attrs["strides"][axis], attrs["dilations"][axis]
        starts = np.arange(out[axis]) * s - attrs["pads"][axis]
        rows = starts[:, None] + d * np.arange(k)[None, :]
        if (((rows < 0) | (rows >= size[axis])).all(axis=1)).any():
            return True
    return False


def _split_rescale(module: Module, op: Op, pool_attrs: dict, x_type: TensorType, sx: float,
                   zx: int, sy: float, zy: int, lo: int, hi: int) -> None:
    """Make the pool `op` a rescale of a new pool that keeps its operand's quantization."""
    info = np.iinfo(x_type.numpy_dtype)
    attrs = dict(pool_attrs, zy=zx, lo=int(info.min), hi=int(info.max))
    codes_type = x_type.with_shape(module.values[op.outputs[0]].shape)
    pool = module.add_op("pool", list(op.inputs), [codes_type], name=op.name + ".codes",
                         attrs=attrs)
    mant, shift = _fixed(op, np.float64(sx) / np.float64(sy),
                         f"input scale {sx:g} / result scale {sy:g}")
    _replace(module, op, "rescale", [pool.outputs[0]],
             {"zx": zx, "M": mant, "shift": shift, "zy": zy, "lo": lo, "hi": hi})


def lower_rescale(module: Module, op: Op) -> None:
    x_type, y_type = module.values[op.inputs[0]], module.values[op.outputs[0]]
    sx, zx = _per_tensor(x_type, "input", op)
    sy, zy = _per_tensor(y_type, "result", op)
    low = high = None
    if op.kind in ("relu", "clip"):
        fmin = 0.0 if op.kind == "relu" else float(op.attrs.get("min", -math.inf))
        fmax = math.inf if op.kind == "relu" else float(op.attrs.get("max", math.inf))
        low = zy + int(np.rint(fmin / np.float64(sy))) if math.isfinite(fmin) else None
        high = zy + int(np.rint(fmax / np.float64(sy))) if math.isfinite(fmax) else None
    lo, hi = _bounds(op, y_type, low, high)
    if x_type.quant == y_type.quant and x_type.dtype == y_type.dtype:
        mant, shift = 0, 0
    else:
        mant, shift = _fixed(op, np.float64(sx) / np.float64(sy),
                             f"input scale {sx:g} / result scale {sy:g}")
    attrs = {"zx": zx, "M": mant, "shift": shift, "zy": zy, "lo": lo, "hi": hi}
    _replace(module, op, "rescale", [op.inputs[0]], attrs)


def lower_eltwise(module: Module, op: Op) -> None:
    a_type, b_type, y_type = (module.values[v] for v in (*op.inputs, op.outputs[0]))
    if a_type.shape != b_type.shape and _channel_constant(module, op) is not None:
        _lower_channel_add(module, op)
        return
    if a_type.shape != b_type.shape:
        raise CimcError(f"op {op.name!r} ({op.kind}): broadcasting {list(a_type.shape)} with "
                        f"{list(b_type.shape)} is not supported; operands must have equal shapes")
    sa, za = _per_tensor(a_type, "first operand", op)
    sb, zb = _per_tensor(b_type, "second operand", op)
    sy, zy = _per_tensor(y_type, "result", op)
    try:
        ma, mb, shift = add_multipliers(sa, sb, sy)
    except ValueError as exc:
        raise CimcError(f"op {op.name!r} ({op.kind}): operand scales {sa:g} and {sb:g}, "
                        f"result scale {sy:g} of {op.outputs[0]!r}: {exc}") from None
    if op.kind == "sub":
        mb = -mb
    lo, hi = _bounds(op, y_type)
    attrs = {"ma": ma, "mb": mb, "za": za, "zb": zb, "M": 1, "shift": shift, "zy": zy,
             "lo": lo, "hi": hi}
    _replace(module, op, "eltwise", list(op.inputs), attrs)


def lower_concat(module: Module, op: Op) -> None:
    """A channel concat; an operand quantized unlike the result is first rescaled to it
    (the reference requantizes each such operand), so the chip's `join` only moves codes."""
    y_type = module.values[op.outputs[0]]
    axis = int(op.attrs.get("axis", 1)) % len(y_type.shape)
    if axis != 1:
        raise CimcError(f"op {op.name!r} (concat): only channel concatenation (axis 1) is "
                        "supported on the chip; concatenate on channels or move this op to "
                        "the host")
    sy, zy = _per_tensor(y_type, "result", op)
    info = np.iinfo(y_type.numpy_dtype)  # the reference saturates, it applies no clamp
    lo, hi = int(info.min), int(info.max)
    inputs = []
    for i, x in enumerate(op.inputs):
        x_type = module.values[x]
        if x_type.quant == y_type.quant and x_type.dtype == y_type.dtype:
            inputs.append(x)
            continue
        sx, zx = _per_tensor(x_type, f"operand {i}", op)
        mant, shift = _fixed(op, np.float64(sx) / np.float64(sy),
                             f"operand {i} scale {sx:g} / result scale {sy:g}")
        rescale = module.add_op(
            "rescale", [x], [y_type.with_shape(x_type.shape)], name=f"{op.name}.in{i}",
            attrs={"zx": zx, "M": mant, "shift": shift, "zy": zy, "lo": lo, "hi": hi})
        inputs.append(rescale.outputs[0])
    _replace(module, op, "join", inputs, {"axis": 1})


def _rescaled(module: Module, op: Op, x: str, to: TensorType) -> str:
    """`x`, or a new `rescale` of it to the quantization of `to` when `op` (a reshape)
    requantizes: the reference re-expresses its operand's codes in the result's."""
    x_type = module.values[x]
    if x_type.quant == to.quant and x_type.dtype == to.dtype:
        return x
    sx, zx = _per_tensor(x_type, "operand", op)
    sy, zy = _per_tensor(to, "result", op)
    mant, shift = _fixed(op, np.float64(sx) / np.float64(sy),
                         f"operand scale {sx:g} / result scale {sy:g}")
    info = np.iinfo(to.numpy_dtype)  # the reference saturates, it applies no clamp
    rescale = module.add_op(
        "rescale", [x], [to.with_shape(x_type.shape)], name=f"{op.name}.requant",
        attrs={"zx": zx, "M": mant, "shift": shift, "zy": zy, "lo": int(info.min),
               "hi": int(info.max)})
    return rescale.outputs[0]


def _flattens_an_image(module: Module, op: Op) -> bool:
    """Whether reshape `op` flattens a [1,C,H,W] image (a gemm reading it reads the image
    itself, its weights permuted), rather than viewing tokens ([1,T,D] as [T,D])."""
    return op.kind == "reshape" and len(module.values[op.inputs[0]].shape) == 4


def lower_reshape(module: Module, op: Op) -> None:
    if all(c.kind == "gemm" for c in module.consumers(op.outputs[0])) and \
            op.outputs[0] not in module.outputs and _flattens_an_image(module, op):
        return  # the gemm reads the image itself (see lower_matvec); this op dies
    x_type = module.values[op.inputs[0]]
    if len(x_type.shape) == 4 and x_type.shape[2] * x_type.shape[3] > 1 and x_type.shape[1] > 1:
        raise CimcError(f"op {op.name!r} (reshape): flattening a [C,H,W] image changes its "
                        "byte order (NHWC on chip); only a flatten feeding a gemm is supported")
    x = _rescaled(module, op, op.inputs[0], module.values[op.outputs[0]])
    _replace(module, op, "view", [x], {})


def lower_lut(module: Module, op: Op) -> None:
    """A quantized activation: its table in the byte order `vlut` indexes (the unsigned
    byte of a code), applied by the op that computes the operand when it can end with a
    table (a matvec, pool, eltwise or rescale whose result only this op reads, of the same element
    type), else by a `rescale` of its own that only looks the codes up."""
    x, table = op.inputs
    x_type, y_type = module.values[x], module.values[op.outputs[0]]
    _per_tensor(x_type, "input", op)
    _per_tensor(y_type, "result", op)
    codes = module.constants[table]
    if codes.shape != (256,):
        raise CimcError(f"op {op.name!r} (lut): the table has {codes.size} codes, not 256")
    # Code c is looked up at its byte c mod 256; codes[k] belongs to lowest code + k.
    lowest = int(np.iinfo(x_type.numpy_dtype).min)
    by_byte = codes[(np.arange(256) - lowest) % 256 if lowest else np.arange(256)]
    by_byte = by_byte.astype(y_type.numpy_dtype)
    name = module.add_constant(module.fresh_name(f"{op.name}.lut"), by_byte)
    producer = module.producer(x)
    if (producer is not None and producer.kind in LUT_KINDS
            and lut_table(module, producer) is None and x not in module.outputs
            and [c.name for c in module.consumers(x)] == [op.name]
            and x_type.dtype == y_type.dtype):
        # The producer's requantized codes go through the table before they leave it.
        module.set_inputs(producer, [*producer.inputs, name])
        module.values[x] = y_type.with_shape(x_type.shape)
        module.replace_uses(op.outputs[0], x)
        module.remove_op(op)
        return
    info = np.iinfo(x_type.numpy_dtype)
    attrs = {"zx": int(x_type.quant.zero_point[0]),  # type: ignore[union-attr]
             "M": 0, "shift": 0, "zy": int(y_type.quant.zero_point[0]),  # type: ignore[union-attr]
             "lo": int(info.min), "hi": int(info.max)}
    _replace(module, op, "rescale", [x, name], attrs)


def _channel_constant(module: Module, op: Op) -> tuple[str, str] | None:
    """(x, constant) of a quantized binary op of a runtime tensor x and a constant that
    varies at most along the channels the chip stores innermost: axis 1 of an image
    [1,C,H,W] ([C], [1,C,1,1], ...), the last axis of tokens [1,T,D] or [T,D] and of
    [1,K] (a Linear's bias added after its MatMul: [D])."""
    runtime = [v for v in op.inputs if not module.is_constant(v)]
    constants = [v for v in op.inputs if module.is_constant(v)]
    if len(runtime) != 1 or len(constants) != 1:
        return None
    x, c = runtime[0], constants[0]
    x_shape, c_shape = module.values[x].shape, module.values[c].shape
    if len(x_shape) < 2 or len(c_shape) > len(x_shape):
        return None
    full = (1,) * (len(x_shape) - len(c_shape)) + tuple(c_shape)
    axis = 1 if len(x_shape) == 4 else len(x_shape) - 1
    if any(d != 1 for k, d in enumerate(full) if k != axis) \
            or full[axis] not in (1, x_shape[axis]):
        return None
    return x, c



def _channel_codes(module: Module, c: str, zero: int, x_type: TensorType) -> np.ndarray:
    """A per-channel constant's codes less `zero`, one per channel the chip stores."""
    channels = image_dims(x_type)[2]
    return np.broadcast_to(module.constants[c].astype(np.int64).reshape(-1) - zero,
                           (channels,))


def _lower_channel_add(module: Module, op: Op) -> None:
    """x + c or x - c (either order) with c a per-channel constant -> `scale` {offsets}:
    the add's own integer semantics, `((x - zx)·Mx ± (c - zc)·Mc) / 2^shift` (docs/ir.md
    'add'), as (x - zx) times the factor Mx (per channel, all equal) plus the offsets
    (c - zc)·Mc, requantized with M = 1."""
    x, c = _channel_constant(module, op)  # type: ignore[misc]
    x_type, c_type, y_type = (module.values[v] for v in (x, c, op.outputs[0]))
    sx, zx = _per_tensor(x_type, "operand", op)
    sc, zc = _per_tensor(c_type, "constant", op)
    sy, zy = _per_tensor(y_type, "result", op)
    first, second = (sx, sc) if op.inputs[0] == x else (sc, sx)
    try:
        m_first, m_second, shift = add_multipliers(first, second, sy)
    except ValueError as exc:
        raise CimcError(f"op {op.name!r} ({op.kind}): operand scales {first:g} and "
                        f"{second:g}, result scale {sy:g} of {op.outputs[0]!r}: {exc}") from None
    sign = -1 if op.kind == "sub" else 1
    mx, mc = (m_first, sign * m_second) if op.inputs[0] == x else (sign * m_second, m_first)
    codes = _channel_codes(module, c, zc, x_type)
    factors = module.add_constant(module.fresh_name(f"{op.name}.factors"),
                                  np.full(codes.shape, mx, np.int32))
    offsets = module.add_constant(module.fresh_name(f"{op.name}.offsets"),
                                  (codes * mc).astype(np.int32))
    lo, hi = _bounds(op, y_type)
    attrs = {"zx": zx, "M": 1, "shift": shift, "zy": zy, "lo": lo, "hi": hi, "offsets": 1}
    _replace(module, op, "scale", [x, factors, offsets], attrs)


def lower_mul(module: Module, op: Op) -> None:
    """x * c[channel] (what tabulation left: a per-channel constant) -> `scale`: the
    codes' offsets times the constant's, requantized with m = sx * sc / sy; a mul of two
    runtime tensors -> `product` (passes/lower/product.py)."""
    if two_tensors(module, op):
        lower_product(module, op)
        return
    found = _channel_constant(module, op)
    assert found is not None  # apply refused the others
    x, c = found
    x_type, c_type, y_type = (module.values[v] for v in (x, c, op.outputs[0]))
    sx, zx = _per_tensor(x_type, "operand", op)
    sc, zc = _per_tensor(c_type, "constant", op)
    sy, zy = _per_tensor(y_type, "result", op)
    factors = _channel_codes(module, c, zc, x_type).astype(np.int32)
    name = module.add_constant(module.fresh_name(f"{op.name}.factors"), factors)
    mant, shift = _fixed(op, np.float64(sx) * np.float64(sc) / np.float64(sy),
                         f"operand scale {sx:g} x constant scale {sc:g} / result scale {sy:g}")
    lo, hi = _bounds(op, y_type)
    attrs = {"zx": zx, "M": mant, "shift": shift, "zy": zy, "lo": lo, "hi": hi}
    _replace(module, op, "scale", [x, name], attrs)


RULES = {
    "conv": lower_matvec,
    "gemm": lower_matvec,
    "max_pool": lower_pool,
    "global_max_pool": lower_pool,
    "avg_pool": lower_pool,
    "global_avg_pool": lower_pool,
    "relu": lower_rescale,
    "clip": lower_rescale,
    "requantize": lower_rescale,
    "add": lower_eltwise,
    "sub": lower_eltwise,
    "concat": lower_concat,
    "reshape": lower_reshape,
    "lut": lower_lut,
    "mul": lower_mul,
    "reduce_mean": lower_reduction,
    "reduce_sum": lower_reduction,
    "matmul": lower_matmul,
    "softmax": lower_softmax,
    "layer_norm": lower_layer_norm,
}
