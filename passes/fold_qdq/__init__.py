"""fold-qdq: turn QDQ patterns into integer ops carrying scales and zero points.

A quantize whose float operand comes, through single-use ops, from an op whose
data operands are all dequantized integers becomes that op on the integers:

    quantize(conv(dequantize(x), dequantize(w), b))   -> conv(x, w, b_i32) : q
    quantize(relu(gemm(dequantize(x), dequantize(w))))  -> gemm(x, w) {clamp} : q
    quantize(reshape(global_avg_pool(dequantize(x)))) -> reshape(global_avg_pool(x) : q) : q
    quantize(dequantize(x))                           -> requantize(x) (or x itself)
    quantize(sigmoid(dequantize(x)))                  -> lut(x, table) : q

A float scalar constant operand of an add, sub, mul or div (onnxruntime leaves
Div unquantized: `x / 6`) becomes an i8 code of +-127 in scale |c| / 127.

A quantize of float element-wise ops (activations, add, sub, mul, div, pow, relu,
clip) of one dequantized 8-bit tensor and scalars that nothing above folds (a Div or
Pow onnxruntime left float) becomes a `lut` of that tensor (`_fold_elementwise`).

A quantize of a float LRN of a dequantized 8-bit tensor becomes integer ops (a lookup
of the squares, a 1x1 conv summing the channel window, a lookup of the normalizing
factor, a mul: passes/fold_qdq/lrn.py).

A quantize of a LayerNormalization over the last axis of tokens [1,T,D] of a dequantized
8-bit tensor becomes the integer `layer_norm` (cimc/reference/layer_norm.py); its gamma
and beta stay f32 constants (quantize_static's dequantized int8 gamma and int32 beta as
the values onnxruntime computes from them). Over other axes it stays float.

An activation of cimc.reference.activation (sigmoid, tanh, hard_swish, gelu, ...)
on an 8-bit per-tensor input becomes `lut`: its 256 result codes, one per input
code, are a constant computed in float64 (`activation.table`).

The result takes the quantize's type. A float bias is quantized to i32 with
scale sx*sw[c]; an i32 bias in another scale is rescaled. Relu/clip, reshape,
transpose and take between the op and the quantize commute with quantization, so
they move onto the integers with the quantize's parameters; a relu/clip right
after a conv, gemm, add, sub or mul becomes its `clamp` (omitted when the
saturation already does it). Quantize ops at the module inputs and dequantize
ops at its outputs stay, so the module keeps float inputs and outputs;
anything else not matched stays float between dequantize and quantize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op, Quant, TensorType
from cimc.pass_base import Pass
from cimc.passes.fold_qdq.dequantize_moves import dequantize_after_moves
from cimc.passes.fold_qdq.inputs import quantize_before_reshape
from cimc.passes.fold_qdq.lrn import fold_lrn, lrn_operand
from cimc.reference import KERNELS, Call, activation
from cimc.reference.integer import add_multipliers

# Kinds that fold when all their data operands are dequantized integers.
FOLDABLE = frozenset(
    {
        "conv",
        "gemm",
        "add",
        "sub",
        "mul",
        "div",
        "max_pool",
        "avg_pool",
        "global_avg_pool",
        "global_max_pool",
        "reduce_mean",
        "reduce_sum",
        "matmul",
        "softmax",
        "layer_norm",
        "concat",
        "reshape",
        "transpose",
        "take",
        "relu",
        "clip",
        *activation.FUNCTIONS,
    }
)
# Float kinds a quantize of an element-wise function of one tensor may read through.
FLOAT_ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "pow", "relu", "clip",
                               *activation.FUNCTIONS})
# Kinds that commute with quantization, so may sit between the op and the quantize.
COMMUTING = frozenset({"reshape", "transpose", "take", "relu", "clip"})
CLAMPED = frozenset({"conv", "gemm", "add", "sub", "mul", "div"})
ACTIVATIONS = frozenset({"relu", "clip"})
# Kinds whose float scalar constant operand becomes an integer code (_scalar_code).
SCALAR_OPERAND = frozenset({"add", "sub", "mul", "div"})
EIGHT_BIT = ("i8", "u8")


@dataclass
class FoldQdq(Pass):
    name: ClassVar[str] = "fold-qdq"

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        # Exactly what `apply` would fold, so a module it has run on (whatever QDQ it
        # left because it cannot fold it) never counts as lacking its results.
        for quantize in [op for op in module.ops() if op.kind == "quantize"]:
            try:
                unfolded = fold(module, quantize, dry=True)
            except CimcError:  # one fold-qdq refuses is not folded either; it says why
                unfolded = True
            if unfolded:
                return (f"quantize {quantize.name!r} still ends a float QDQ pattern; "
                        "fold-qdq turns it into an integer op")
        return None

    def apply(self, module: Module) -> None:
        quantize_before_reshape(module)
        dequantize_after_moves(module)
        for quantize in [op for op in module.ops() if op.kind == "quantize"]:
            fold(module, quantize)
        module.remove_dead()


def _sole_reader(module: Module, value: str) -> bool:
    return value not in module.outputs and len(module.consumers(value)) == 1


def _dequantized(module: Module, value: str) -> str | None:
    """The per-tensor quantized integer that `value` dequantizes, if any."""
    producer = module.producer(value)
    if producer is None or producer.kind != "dequantize":
        return None
    source = producer.inputs[0]
    quant = module.values[source].quant
    return source if quant is not None and quant.axis is None else None


def fold(module: Module, quantize: Op, *, dry: bool = False) -> bool:
    """Fold the pattern ending at `quantize`; False when there is none. `dry`: only say
    whether there is one, leaving the module as it is."""
    result = module.values[quantize.outputs[0]]
    if result.quant is None or result.quant.axis is not None:
        return False
    source = _dequantized(module, quantize.inputs[0])
    if source is not None:
        return dry or _fold_requantize(module, quantize, source)
    found = lrn_operand(module, quantize)
    if found is not None:
        if not dry:
            fold_lrn(module, quantize, *found)
        return True
    chain: list[Op] = []  # commuting ops between the anchor and the quantize, top first
    anchor = module.producer(quantize.inputs[0])
    while anchor is not None and _sole_reader(module, anchor.outputs[0]):
        if anchor.kind in COMMUTING and _dequantized(module, anchor.inputs[0]) is None:
            chain.insert(0, anchor)
            anchor = module.producer(anchor.inputs[0])
            continue
        break
    if anchor is None or anchor.kind not in FOLDABLE or not _sole_reader(module, anchor.outputs[0]):
        return _fold_elementwise(module, quantize, dry)
    operands = _integer_operands(module, anchor, result, dry)
    if operands is None:
        return _fold_elementwise(module, quantize, dry)
    if dry:
        return True
    attrs = dict(anchor.attrs)
    kind = anchor.kind
    if kind in activation.FUNCTIONS:
        operands = [operands[0], _lut_table(module, anchor, operands[0], result)]
        kind, attrs = "lut", {}
    rebuilt = [anchor, *chain]
    if anchor.kind in CLAMPED and chain and chain[0].kind in ACTIVATIONS:
        rebuilt.remove(chain[0])
        clamp = _clamp(chain[0], result)
        if clamp is not None:
            attrs["clamp"] = clamp
    _replace(module, [anchor, *chain], rebuilt, quantize, operands, attrs, kind)
    return True


def _lut_table(module: Module, anchor: Op, x: str, result: TensorType) -> str:
    """A constant of the 256 result codes of activation `anchor` on the codes of `x`."""
    x_type = module.values[x]
    assert x_type.quant is not None and result.quant is not None
    codes = activation.table(
        anchor.kind, anchor.attrs, x_type.numpy_dtype, x_type.quant.scale[0],
        x_type.quant.zero_point[0], result.numpy_dtype, result.quant.scale[0],
        result.quant.zero_point[0])
    return module.add_constant(module.fresh_name(f"{anchor.name}_table"), codes)


def _elementwise_leaves(module: Module, value: str, ops: list[Op]) -> set[str] | None:
    """The dequantized 8-bit tensors float `value` is an element-wise function of, with
    one-element float constants (None: something else); `ops` collects the float ops."""
    if module.is_constant(value):
        ty = module.values[value]
        return set() if ty.dtype == "f32" and ty.size == 1 else None
    source = _dequantized(module, value)
    if source is not None:
        return {source} if module.values[source].dtype in EIGHT_BIT else None
    producer = module.producer(value)
    if producer is None or producer.kind not in FLOAT_ELEMENTWISE or \
            not _sole_reader(module, value):
        return None
    found: set[str] = set()
    for v in producer.inputs:
        leaves = _elementwise_leaves(module, v, ops)
        if leaves is None:
            return None
        found |= leaves
    if producer not in ops:
        ops.append(producer)
    return found


def _fold_elementwise(module: Module, quantize: Op, dry: bool) -> bool:
    """quantize(F(dequantize(x))) with F float element-wise ops of x and scalars (a GELU
    exported as x * 0.5 * (1 + erf(x / sqrt 2)), whose Div onnxruntime leaves float) ->
    lut(x, table): F evaluated by the reference's float kernels on the 256 codes of x,
    dequantized and quantized as onnxruntime does (float32)."""
    ops: list[Op] = []
    leaves = _elementwise_leaves(module, quantize.inputs[0], ops)
    if leaves is None or len(leaves) != 1 or not ops:
        return False
    (x,) = leaves
    result = module.values[quantize.outputs[0]]
    if result.dtype not in EIGHT_BIT or module.values[x].shape != result.shape:
        return False
    if dry:
        return True
    x_type = module.values[x]
    info = np.iinfo(x_type.numpy_dtype)
    codes = np.arange(int(info.min), int(info.max) + 1).astype(x_type.numpy_dtype)
    f32 = TensorType((256,), "f32")
    values: dict[str, np.ndarray] = {}
    for op in ops:  # operands first (post-order)
        args = []
        for v in op.inputs:
            if module.is_constant(v):
                args.append(module.constants[v].astype(np.float32).reshape(()))
            elif v in values:
                args.append(values[v])
            else:  # dequantize(x), as onnxruntime computes it
                dq = module.producer(v)
                assert dq is not None
                args.append(KERNELS["dequantize"](Call(dq, [codes], [x_type], f32)))
        call = Call(op, args, [module.values[v] for v in op.inputs], f32)
        values[op.outputs[0]] = np.broadcast_to(KERNELS[op.kind](call), (256,))
    table = KERNELS["quantize"](Call(quantize, [values[quantize.inputs[0]]], [f32],
                                     result.with_shape((256,))))
    name = module.add_constant(module.fresh_name(f"{quantize.name}_table"), table)
    quantize.kind, quantize.attrs = "lut", {}
    module.set_inputs(quantize, [x, name])
    return True


def _fold_requantize(module: Module, quantize: Op, source: str) -> bool:
    if module.values[source] == module.values[quantize.outputs[0]]:
        module.replace_uses(quantize.outputs[0], source)
        module.remove_op(quantize)
    else:
        quantize.kind = "requantize"
        module.set_inputs(quantize, [source])
    return True


def _integer_operands(module: Module, anchor: Op, result: TensorType,
                      dry: bool = False) -> list[str] | None:
    """The anchor's operands in the integer domain, or None when it cannot fold (`dry`:
    a float bias is not quantized, its name stands for the one that would be)."""
    if anchor.kind in ("conv", "gemm"):
        return _linear_operands(module, anchor, result, dry)
    if anchor.kind == "softmax" and not _over_tokens(module, anchor):
        return None  # a classifier's softmax stays float: the host's tail
    if anchor.kind == "layer_norm":
        return _layer_norm_operands(module, anchor, result, dry)
    operands = [_dequantized(module, v) for v in anchor.inputs]
    if anchor.kind in SCALAR_OPERAND and any(v is not None for v in operands):
        operands = [v if v is not None else _scalar_code(module, anchor, k, dry)
                    for k, v in enumerate(operands)]
    if any(v is None for v in operands) or result.dtype not in EIGHT_BIT:
        return None
    integers = [v for v in operands if v is not None]
    if anchor.kind in activation.FUNCTIONS and module.values[integers[0]].dtype not in EIGHT_BIT:
        return None
    if anchor.kind in ("add", "sub"):
        scales = [module.values[v] for v in integers]
        if any(ty.dtype not in EIGHT_BIT for ty in scales):
            return None
        assert scales[0].quant and scales[1].quant and result.quant
        try:
            add_multipliers(
                scales[0].quant.scale[0], scales[1].quant.scale[0], result.quant.scale[0]
            )
        except ValueError as exc:
            # Left float, it was later refused as "computes in float between integer
            # layers ... quantize this op", though it is quantized: say what is wrong.
            raise CimcError(f"op {anchor.name!r} ({anchor.kind}): {exc}") from None
    return integers


def _over_tokens(module: Module, softmax: Op) -> bool:
    """Whether `softmax` normalizes tokens (rank 3 or more): each token of [..., T, N]
    (T > 1) over its last axis (attention's scores, of one head [1,T,N] or several
    [1,heads,T,N]), or the tokens over another axis (attention pooling's weights over
    time, [1,T,1] over axis 1), which the chip computes in integers; a [N, K] softmax
    is a classifier's over a batch, the host's float tail."""
    shape = module.values[softmax.inputs[0]].shape
    axis = int(softmax.attrs.get("axis", -1)) % max(len(shape), 1)
    last = axis == len(shape) - 1
    return len(shape) >= 3 and shape[axis] > 1 and (not last or shape[-2] > 1)


def _layer_norm_operands(module: Module, norm: Op, result: TensorType,
                         dry: bool) -> list[str] | None:
    """(x, gamma[, beta]) of a LayerNorm over the last axis of tokens [N,T,D] (a batch
    baked into the export `lower` makes samples of a run) with 8-bit codes in and out: x
    the codes, gamma and beta f32 constants (a dequantized constant, quantize_static's
    int8 gamma and int32 beta, becomes the f32 values onnxruntime computes from it).
    Anything else stays float (`lower` refuses it, naming it)."""
    x = _dequantized(module, norm.inputs[0])
    shape = module.values[norm.inputs[0]].shape
    if x is None or module.values[x].dtype not in EIGHT_BIT or result.dtype not in EIGHT_BIT \
            or len(shape) != 3 or int(norm.attrs["axis"]) % 3 != 2:
        return None
    params = []
    for value in norm.inputs[1:]:
        producer = module.producer(value)
        if module.is_constant(value) and module.values[value].dtype == "f32":
            params.append(value)
        elif producer is not None and producer.kind == "dequantize" and \
                module.is_constant(producer.inputs[0]):
            params.append(value if dry else _dequantized_constant(module, producer))
        else:
            return None
    return [x, *params]


def _dequantized_constant(module: Module, dequantize: Op) -> str:
    """A f32 constant of what `dequantize` of a constant computes (float32, as onnxruntime)."""
    source = dequantize.inputs[0]
    ty = module.values[source]
    out = module.values[dequantize.outputs[0]]
    values = KERNELS["dequantize"](Call(dequantize, [module.constants[source]], [ty], out))
    return module.add_constant(module.fresh_name(f"{dequantize.name}_values"),
                               np.asarray(values, np.float32))


def _scalar_code(module: Module, anchor: Op, k: int, dry: bool) -> str | None:
    """Operand `k` of `anchor`, a float constant of one nonzero element c that
    onnxruntime's quantizer left float (the divisor of a Div), as an i8 code of
    +-127 with scale |c| / 127, so the integer op reads it like any other operand
    (`dry`: its name stands for the code that would be added)."""
    value = anchor.inputs[k]
    ty = module.values[value]
    if not module.is_constant(value) or ty.dtype != "f32" or ty.size != 1:
        return None
    c = float(module.constants[value].reshape(()))
    if c == 0.0 or not np.isfinite(c):
        return None
    if dry:
        return value
    code = np.full(ty.shape, 127 if c > 0 else -127, dtype=np.int8)
    return module.add_constant(module.fresh_name(f"{anchor.name}_scalar"), code,
                               Quant((abs(c) / 127.0,), (0,)))


def _linear_operands(module: Module, anchor: Op, result: TensorType,
                     dry: bool = False) -> list[str] | None:
    """(x, w[, b_i32]) of a conv or gemm, quantizing or rescaling a bias as needed."""
    if anchor.kind == "gemm" and set(anchor.attrs) & {"trans_a", "trans_b", "alpha", "beta"}:
        return None
    x = _dequantized(module, anchor.inputs[0]) or _reshaped_codes(module, anchor.inputs[0], dry)
    w_producer = module.producer(anchor.inputs[1])
    if x is None or w_producer is None or w_producer.kind != "dequantize":
        return None
    w = w_producer.inputs[0]
    x_type, w_type = module.values[x], module.values[w]
    if not module.is_constant(w) or w_type.quant is None or w_type.quant.axis not in (None, 0):
        return None
    if x_type.dtype not in EIGHT_BIT or w_type.dtype not in EIGHT_BIT:
        return None
    if result.dtype not in (*EIGHT_BIT, "i32"):
        return None
    assert x_type.quant is not None
    channels = w_type.shape[0]
    acc_scale = x_type.quant.scale[0] * np.broadcast_to(np.asarray(w_type.quant.scale), (channels,))
    if len(anchor.inputs) < 3:
        return [x, w]
    bias = _integer_bias(module, anchor, acc_scale, dry)
    return None if bias is None else [x, w, bias]


def _reshaped_codes(module: Module, value: str, dry: bool) -> str | None:
    """The codes of `value`, a float reshape (read only here) of dequantized tokens
    [1, T, D] to [T, D] rows, as an integer reshape of them: canonicalize writes a MatMul
    of tokens by a constant as that reshape and a gemm, after the quantizer put the
    DequantizeLinear before the MatMul (dequantizing commutes with reshaping). `dry`: the
    dequantized codes stand for the reshape that would be added."""
    producer = module.producer(value)
    if producer is None or producer.kind != "reshape" or not _sole_reader(module, value) \
            or len(module.values[producer.inputs[0]].shape) != 3 \
            or len(module.values[value].shape) != 2:
        return None  # only tokens as rows: a flatten the quantizer left float stays so
    source = _dequantized(module, producer.inputs[0])
    if source is None or dry:
        return source
    codes = module.add_op("reshape", [source],
                          [module.values[source].with_shape(module.values[value].shape)],
                          name=module.fresh_name(f"{producer.name}.codes"),
                          attrs=dict(producer.attrs))
    return codes.outputs[0]


def _integer_bias(module: Module, anchor: Op, acc_scale: np.ndarray,
                  dry: bool = False) -> str | None:
    """An i32 bias constant in the accumulator scale `acc_scale`, reused when it already is
    (`dry`: the float bias's name when one would be added)."""
    value = anchor.inputs[2]
    producer = module.producer(value)
    if producer is not None and producer.kind == "dequantize":
        source = producer.inputs[0]
        ty = module.values[source]
        if not module.is_constant(source) or ty.dtype != "i32" or ty.quant is None:
            return None
        scale = np.broadcast_to(np.asarray(ty.quant.scale), acc_scale.shape)
        zero = np.broadcast_to(np.asarray(ty.quant.zero_point), acc_scale.shape)
        if np.allclose(scale, acc_scale, rtol=1e-6, atol=0) and not zero.any():
            return source
        real = (module.constants[source].astype(np.float64) - zero) * scale
    elif module.is_constant(value) and module.values[value].dtype == "f32":
        real = module.constants[value].astype(np.float64)
    else:
        return None
    if dry:
        return value
    codes = np.rint(real / acc_scale)
    codes = np.clip(codes, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    quant = Quant(tuple(float(s) for s in acc_scale), (0,) * len(acc_scale), 0)
    return module.add_constant(module.fresh_name(f"{anchor.name}_bias_i32"), codes, quant)


def _clamp(activation: Op, result: TensorType) -> list[int] | None:
    """[lo, hi] in the result's integer domain for a relu/clip; None when saturation suffices."""
    assert result.quant is not None
    scale, zero = result.quant.scale[0], result.quant.zero_point[0]
    info = np.iinfo(result.numpy_dtype)
    low = 0.0 if activation.kind == "relu" else float(activation.attrs.get("min", -np.inf))
    high = np.inf if activation.kind == "relu" else float(activation.attrs.get("max", np.inf))
    lo = info.min if not np.isfinite(low) else zero + int(np.rint(low / scale))
    hi = info.max if not np.isfinite(high) else zero + int(np.rint(high / scale))
    lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
    return None if (lo, hi) == (info.min, info.max) else [lo, hi]


def _replace(
    module: Module,
    ops: list[Op],
    rebuilt: list[Op],
    quantize: Op,
    operands: list[str],
    anchor_attrs: dict[str, Any],
    anchor_kind: str,
) -> None:
    """Replace float `ops` (anchor first, each read only by the next) and `quantize` by
    integer versions of the `rebuilt` ones, of the same names, in the quantize's type."""
    result = module.values[quantize.outputs[0]]
    final = quantize.outputs[0]
    # Readers of the quantized value wait on a placeholder while the old ops go away.
    placeholder = module.fresh_name(f"{final}.folding")
    module.replace_uses(final, placeholder)
    plan = [
        (op.kind, op.name, op.outputs[0], module.values[op.outputs[0]].shape, dict(op.attrs))
        for op in rebuilt
    ]
    plan[0] = (anchor_kind, *plan[0][1:4], anchor_attrs)
    for op in [quantize, *reversed(ops)]:
        module.remove_op(op)
    inputs = operands
    for i, (kind, name, output, shape, attrs) in enumerate(plan):
        output = final if i == len(plan) - 1 else output
        ty = TensorType(shape, result.dtype, result.quant)
        op = module.add_op(kind, inputs, [ty], name=name, outputs=[output], attrs=attrs)
        inputs = [op.outputs[0]]
    module.replace_uses(placeholder, final)
