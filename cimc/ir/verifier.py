"""The IR verifier: checks that a Module is well formed.

What an op of each kind may look like is data, the table `OP_KINDS`: how many
operands and results it takes and which attributes it requires or allows,
with their types. A backend pass that introduces a new kind adds one entry.
`verify` also checks the module as a graph: every value is defined once, every
operand is defined, the graph edges match the operand lists, there is no
cycle, constants match their types. Last, each op's result must have the shape
its kind's shape function (cimc/ir/shapes.py) gives for its operands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir import shapes
from cimc.ir.attr_types import CLAMP, FLAG, FLOAT, FLOATS, INT, INTS, PAIR, QUAD, STR, AttrType
from cimc.ir.module import Module, Op, TensorType
from cimc.ir.printer import type_text, value_ref
from cimc.ir.shapes import ShapeError, ShapeRule


class VerifyError(CimcError):
    """A malformed module; `op` / `value` name what is wrong, so a caller can locate it."""

    def __init__(self, message: str, op: str | None = None, value: str | None = None):
        super().__init__(message)
        self.op = op
        self.value = value


@dataclass(frozen=True)
class OpSpec:
    """What ops of one kind look like: operand/result counts (max None = any), attributes,
    and the result shape their operands give (cimc/ir/shapes.py; None = not checked)."""

    operands: tuple[int, int | None]
    required: dict[str, AttrType] = field(default_factory=dict)
    optional: dict[str, AttrType] = field(default_factory=dict)
    results: tuple[int, int | None] = (1, 1)
    shape: ShapeRule | None = None


# Fixed-point requantization to the result: y = clamp(round(acc * M / 2^shift) + zy, lo, hi).
_REQUANT = {"M": INT, "shift": INT, "zy": INT, "lo": INT, "hi": INT}
_ELEMENTWISE = OpSpec((2, 2), optional={"clamp": CLAMP}, shape=shapes.broadcast)
# `phase` (partition) on every chip op of a model run in phases.
_PLACED = {"core": INT, "addr": INT, "local_bytes": INTS, "pipeline": STR, "stream": INT,
           "phase": INT, "image_stride": INT}
_UNARY = OpSpec((1, 1), shape=shapes.same)
_RECURRENT = {"hidden_size": INT, "direction": STR, "layout": FLAG}
_RECURRENT_OPTIONS = {"clip": FLOAT, "scales": AttrType("floats", 6)}

# The op kinds of docs/ir.md.
OP_KINDS: dict[str, OpSpec] = {
    "conv": OpSpec((2, 3), {"strides": PAIR, "pads": QUAD, "dilations": PAIR, "group": INT},
                   {"clamp": CLAMP}, shape=shapes.conv),
    # trans_a/trans_b/alpha/beta: ONNX Gemm forms that canonicalize normalizes away.
    "gemm": OpSpec((2, 3), optional={"clamp": CLAMP, "trans_a": FLAG, "trans_b": FLAG,
                                     "alpha": FLOAT, "beta": FLOAT}, shape=shapes.gemm),
    "matmul": OpSpec((2, 2), shape=shapes.matmul),
    "add": _ELEMENTWISE,
    "sub": _ELEMENTWISE,
    "mul": _ELEMENTWISE,
    "div": _ELEMENTWISE,
    "pow": _ELEMENTWISE,
    "relu": _UNARY,
    "clip": OpSpec((1, 1), {"min": FLOAT, "max": FLOAT}, shape=shapes.same),
    "sigmoid": _UNARY,
    "tanh": _UNARY,
    "hard_sigmoid": OpSpec((1, 1), {"alpha": FLOAT, "beta": FLOAT}, shape=shapes.same),
    "hard_swish": _UNARY,
    "leaky_relu": OpSpec((1, 1), {"alpha": FLOAT}, shape=shapes.same),
    "elu": OpSpec((1, 1), {"alpha": FLOAT}, shape=shapes.same),
    "selu": OpSpec((1, 1), {"alpha": FLOAT, "gamma": FLOAT}, shape=shapes.same),
    "softplus": _UNARY,
    "gelu": OpSpec((1, 1), {"approximate": STR}, shape=shapes.same),
    "erf": _UNARY,
    # A quantized activation: its result codes indexed by the input code (docs/ir.md).
    "lut": OpSpec((2, 2), shape=shapes.same),
    "softmax": OpSpec((1, 1), {"axis": INT}, shape=shapes.axis_in_rank),
    "log_softmax": OpSpec((1, 1), {"axis": INT}, shape=shapes.axis_in_rank),
    "layer_norm": OpSpec((2, 3), {"axis": INT, "epsilon": FLOAT}, shape=shapes.same),
    "lrn": OpSpec((1, 1), {"size": INT, "alpha": FLOAT, "beta": FLOAT, "bias": FLOAT},
                  shape=shapes.same),
    "batch_norm": OpSpec((5, 5), {"epsilon": FLOAT}, shape=shapes.batch_norm),
    "max_pool": OpSpec((1, 1), {"kernel": PAIR, "strides": PAIR, "pads": QUAD,
                                "dilations": PAIR, "ceil_mode": FLAG}, shape=shapes.pool),
    "avg_pool": OpSpec((1, 1), {"kernel": PAIR, "strides": PAIR, "pads": QUAD,
                                "ceil_mode": FLAG, "count_include_pad": FLAG},
                       {"dilations": PAIR}, shape=shapes.pool),
    # ONNX Resize, linear or cubic (float only; nearest is data movement)
    "resize": OpSpec((1, 1), {"mode": STR, "scales": FLOATS, "sizes": INTS,
                              "coordinate_transformation_mode": STR},
                     {"roi": FLOATS, "cubic_coeff_a": FLOAT, "exclude_outside": FLAG,
                      "antialias": FLAG, "extrapolation_value": FLOAT}, shape=shapes.resize),
    "global_avg_pool": OpSpec((1, 1), shape=shapes.global_pool),
    "global_max_pool": OpSpec((1, 1), shape=shapes.global_pool),
    "reduce_mean": OpSpec((1, 1), {"axes": INTS, "keepdims": FLAG}, shape=shapes.reduce_mean),
    "reduce_sum": OpSpec((1, 1), {"axes": INTS, "keepdims": FLAG}, shape=shapes.reduce_mean),
    "concat": OpSpec((1, None), {"axis": INT}, shape=shapes.concat),
    # ONNX LSTM/GRU/RNN with every optional operand present (docs/ir.md, "Recurrent
    # layers"): x, w, r, b, initial h (, initial c, peepholes) -> y, last h (, last c).
    # A quantized one has the calibrated `scales` of its intermediates.
    "lstm": OpSpec((7, 7), _RECURRENT, _RECURRENT_OPTIONS, (3, 3), shapes.recurrent(4)),
    "gru": OpSpec((5, 5), {**_RECURRENT, "linear_before_reset": FLAG}, _RECURRENT_OPTIONS,
                  (2, 2), shapes.recurrent(3)),
    "rnn": OpSpec((5, 5), _RECURRENT, {"clip": FLOAT}, (2, 2), shapes.recurrent(1)),
    "reshape": OpSpec((1, 1), {"shape": INTS}, shape=shapes.same_size),
    "transpose": OpSpec((1, 1), {"perm": INTS}, shape=shapes.transpose),
    # ConvTranspose until canonicalize makes it zero insertion (a take) and a conv.
    "conv_transpose": OpSpec((2, 3), {"strides": PAIR, "dilations": PAIR, "group": INT,
                                      "pads": QUAD}, shape=shapes.conv_transpose),
    # Pad, Slice, Split, Resize nearest: positions picked per axis (cimc/reference/movement.py).
    "take": OpSpec((1, 1), {"axes": INTS, "index": INTS}, {"fill": FLOAT}, shape=shapes.take),
    "quantize": _UNARY,
    "dequantize": _UNARY,
    "requantize": _UNARY,
    # Imported from ONNX for canonicalize to remove.
    "identity": _UNARY,
    "sum": OpSpec((1, None), shape=shapes.broadcast),
    # The backend's kinds (passes/lower/), with what tile, replicate, place and
    # schedule add to them (docs/backend.md).
    # matvec, pool, eltwise, rescale, scale and product may end with a lookup table
    # (cimc.dialect.chip.LUT_KINDS).
    "matvec": OpSpec((4, 5), {"kernel": PAIR, "strides": PAIR, "pads": QUAD,
                              "dilations": PAIR, "group": INT},
                     {"block_rows": INT, "block_cols": INT, "blocks": INTS, "slices": INT,
                      "input_steps": INT, "replicas": INT, "block_cores": INTS,
                      "block_groups": INTS, "block_slices": INTS, "reducers": INTS,
                      "tags": INTS, "messages": INTS, "addr": INT, "local_bytes": INTS,
                      "pipeline": STR, "stream": INT, "phase": INT, "image_stride": INT},
                     shape=shapes.matvec),
    # An average pool whose windows count different positions has per row and column
    # counts and the (M, shift) of each distinct divisor.
    "pool": OpSpec((1, 2), {"mode": STR, "kernel": PAIR, "strides": PAIR, "pads": QUAD,
                            "dilations": PAIR, "offset": INT, **_REQUANT},
                   # an average whose border windows count fewer positions: a multiplier
                   # per divisor, and each output row's and column's extent
                   {**_PLACED, "divisors": INTS, "divisor_M": INTS, "divisor_shift": INTS,
                    "row_extents": INTS, "col_extents": INTS},
                   shape=shapes.backend_pool),
    "eltwise": OpSpec((2, 3), {"ma": INT, "mb": INT, "za": INT, "zb": INT, **_REQUANT},
                      _PLACED, shape=shapes.backend_eltwise),
    "rescale": OpSpec((1, 2), {"zx": INT, **_REQUANT}, _PLACED, shape=shapes.same),
    # x * factors[channel] (+ offsets[channel] with `offsets`), requantized: a mul by, or
    # an add of, a per-channel constant.
    "scale": OpSpec((2, 4), {"zx": INT, **_REQUANT}, {**_PLACED, "offsets": FLAG},
                    shape=shapes.same),
    # Data movement: every result byte is one operand byte or `fill` (passes/lower/movement.py).
    "gather": OpSpec((2, None), {"fill": INT}, _PLACED, shape=shapes.backend_gather),
    # Each pixel's (token's) softmax over its channels: exp looked up, summed, divided.
    "pixel_softmax": OpSpec((2, 2), {"P": INT, "zy": INT, "lo": INT, "hi": INT}, _PLACED,
                            shape=shapes.same),
    # Each pixel's (token's) LayerNorm over its channels: sums, a reciprocal square root,
    # per-channel fixed-point gamma (the requant table `finish`) and beta (`bias`).
    "pixel_layernorm": OpSpec((3, 3), {"zx": INT, "m": INT, "e": INT, "k": INT, "a": INT,
                                       "floor": INT}, _PLACED, shape=shapes.same),
    # Σ_k (a - za)(b - zb), requantized: a matmul of two runtime token matrices.
    "dot": OpSpec((2, 2), {"za": INT, "zb": INT, "rows": INT, **_REQUANT}, _PLACED,
                  shape=shapes.backend_dot),
    # (a - za) * (b - zb), requantized: a mul of two runtime tensors (broadcasting).
    "product": OpSpec((2, 3), {"za": INT, "zb": INT, **_REQUANT}, _PLACED,
                      shape=shapes.backend_eltwise),
    "view": OpSpec((1, 1), optional={"addr": INT, "phase": INT, "image_stride": INT},
                   shape=shapes.same_size),
}
# Placed and scheduled ops: core, global address of the result, local memory used.
OP_KINDS["join"] = OpSpec((1, None), {"axis": INT}, _PLACED, shape=shapes.concat)
OP_KINDS["quantize"] = OpSpec((1, 1), optional={"addr": INT}, shape=shapes.same)
# The program output's name when it is not the result's (a model input passed through).
OP_KINDS["dequantize"] = OpSpec((1, 1), optional={"port": STR}, shape=shapes.same)


def verify(module: Module) -> None:
    """Raise CimcError describing the first way `module` is malformed."""
    producers = _definitions(module)
    for name in sorted(module.values.keys() - producers.keys()):
        raise VerifyError(f"value {value_ref(name)} has a type but nothing defines it",
                          value=name)
    for name, array in module.constants.items():
        _check_constant(name, array, module.values[name])
    for name, type_ in module.values.items():
        _check_type(name, type_)
    for node, data in module.graph.nodes(data=True):
        op = data.get("op")
        if not isinstance(op, Op) or op.name != node:
            raise VerifyError(f"graph node {node!r} does not hold an op of that name")
        _check_op(module, op, producers)
    _check_edges(module, producers)
    if not nx.is_directed_acyclic_graph(module.graph):
        cycle = " -> ".join(f"'{src}'" for src, _, _ in nx.find_cycle(module.graph))
        raise VerifyError(f"the graph has a cycle: {cycle}")
    for name in module.outputs:
        if name not in producers:
            raise VerifyError(f"module output {value_ref(name)} is not defined", value=name)
    # Shapes last: they are only meaningful in a well-formed graph; the first op wins.
    for op in module.ops():
        _check_result_shape(module, op)


def _definitions(module: Module) -> dict[str, str | None]:
    """Value name -> the op defining it (None for inputs and constants)."""
    producers: dict[str, str | None] = {}

    def define(name: str, op_name: str | None, what: str) -> None:
        if name in producers:
            raise VerifyError(f"value {value_ref(name)} is defined twice (the second time by "
                              f"{what})", op_name, name)
        if name not in module.values:
            raise VerifyError(f"value {value_ref(name)} (defined by {what}) has no type",
                              op_name, name)
        producers[name] = op_name

    for name in module.inputs:
        define(name, None, "a module input")
    for name in module.constants:
        define(name, None, "a constant")
    for node, data in module.graph.nodes(data=True):
        for name in getattr(data.get("op"), "outputs", ()):
            define(name, node, f"op '{node}'")
    return producers


def _check_constant(name: str, array: Any, type_: TensorType) -> None:
    if not isinstance(array, np.ndarray):
        raise VerifyError(f"constant {value_ref(name)} holds a {type(array).__name__}, "
                          "not a numpy array", value=name)
    if array.dtype != type_.numpy_dtype or tuple(array.shape) != type_.shape:
        raise VerifyError(
            f"constant {value_ref(name)} has data {array.dtype}{list(array.shape)} but type "
            f"{type_.dtype}{list(type_.shape)}", value=name)


def _check_type(name: str, type_: TensorType) -> None:
    if any(d < 0 for d in type_.shape):
        raise VerifyError(f"value {value_ref(name)}: negative dimension in shape "
                          f"{list(type_.shape)}", value=name)
    q = type_.quant
    if q is None:
        return
    dtype = type_.numpy_dtype
    if dtype.kind not in "iu":
        raise VerifyError(f"value {value_ref(name)}: quantization parameters on a "
                          f"{type_.dtype} tensor; only integer tensors are quantized", value=name)
    scale = np.asarray(q.scale, dtype=np.float64)  # whole arrays: per-element checks took 0.5 s
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise VerifyError(f"value {value_ref(name)}: quantization scales must be positive "
                          f"finite numbers, got {list(q.scale)}", value=name)
    info = np.iinfo(dtype)
    if q.zero_point and not info.min <= min(q.zero_point) <= max(q.zero_point) <= info.max:
        raise VerifyError(f"value {value_ref(name)}: zero point {list(q.zero_point)} is out of "
                          f"range for {type_.dtype} [{info.min}, {info.max}]", value=name)
    if q.axis is None:
        return
    rank = len(type_.shape)
    if not 0 <= q.axis < rank:
        raise VerifyError(f"value {value_ref(name)}: quantization axis {q.axis} is outside "
                          f"its rank {rank}", value=name)
    if len(q.scale) != type_.shape[q.axis]:
        raise VerifyError(
            f"value {value_ref(name)}: {len(q.scale)} scales for {type_.shape[q.axis]} channels "
            f"along axis {q.axis}", value=name)


def _count(n: int, bounds: tuple[int, int | None]) -> str | None:
    """None if n is within bounds, else the expected count in words."""
    low, high = bounds
    if low <= n and (high is None or n <= high):
        return None
    if high is None:
        return f"at least {low}"
    return str(low) if low == high else f"{low} to {high}"


def _check_op(module: Module, op: Op, producers: dict[str, str | None]) -> None:
    def fail(message: str) -> VerifyError:
        return VerifyError(f"op '{op.name}' ({op.kind}): {message}", op.name)

    spec = OP_KINDS.get(op.kind)
    if spec is None:
        raise fail(f"unknown op kind; valid kinds: {', '.join(sorted(OP_KINDS))}")
    for what, values, bounds in (("operands", op.inputs, spec.operands),
                                 ("results", op.outputs, spec.results)):
        expected = _count(len(values), bounds)
        if expected is not None:
            raise fail(f"expected {expected} {what}, got {len(values)}")
    for name in op.inputs:
        if name not in producers:
            raise fail(f"operand {value_ref(name)} is not defined")
    for name in op.outputs:
        if module.producer(name) is not op:
            raise fail(f"result {value_ref(name)} is not registered as produced by it")
    for key, attr_type in spec.required.items():
        if key not in op.attrs:
            raise fail(f"missing attribute '{key}' ({attr_type.describe()})")
    for key, value in op.attrs.items():
        known = spec.required.get(key) or spec.optional.get(key)
        if known is None:
            allowed = sorted(spec.required.keys() | spec.optional.keys())
            raise fail(f"unknown attribute '{key}'; allowed: {', '.join(allowed) or 'none'}")
        if not known.accepts(value):
            raise fail(f"attribute '{key}' must be {known.describe()}, got {value!r}")


def _check_result_shape(module: Module, op: Op) -> None:
    """The result has the shape the operands and attributes give (its dtype is free)."""
    rule = OP_KINDS[op.kind].shape
    if rule is None:
        return
    result = module.values[op.outputs[0]]
    try:
        allowed = rule([module.values[v] for v in op.inputs], op.attrs, result)
    except ShapeError as exc:
        raise VerifyError(f"op '{op.name}' ({op.kind}): {exc}", op.name) from None
    if result.shape not in allowed:
        expected = type_text(result.with_shape(allowed[0]))
        raise VerifyError(f"op '{op.name}' ({op.kind}): result {value_ref(op.outputs[0])} is "
                          f"{type_text(result)}, expected {expected}", op.name)


def _check_edges(module: Module, producers: dict[str, str | None]) -> None:
    expected = set()
    for node, data in module.graph.nodes(data=True):
        for name in data["op"].inputs:
            producer = producers.get(name)
            if producer is not None:
                expected.add((producer, node, name))
    actual = set(module.graph.edges(keys=True))
    for src, dst, key in sorted(expected - actual):
        raise VerifyError(f"op '{dst}' reads {value_ref(key)} from op '{src}' but the graph "
                          "has no such edge", dst)
    for src, dst, key in sorted(actual - expected):
        raise VerifyError(f"the graph has an edge '{src}' -> '{dst}' for {value_ref(key)} "
                          f"but op '{dst}' does not read it from '{src}'", dst)
