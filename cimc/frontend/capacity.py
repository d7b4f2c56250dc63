"""Whether a model's weights can fit a target, from their shapes alone.

Right after the ONNX file is read, before it is checked, converted, imported
and (a float model) quantized, which take minutes and gigabytes for a large
model, count the crossbars the tile pass will need: every Conv, Gemm and
MatMul (and their QLinear/Integer forms) whose weights are an initializer,
or a DequantizeLinear of one, becomes a `[K, N]` matrix (block-diagonal over
a conv's groups, as `lower` builds it), cut into blocks and bit-sliced by
the tile pass's arithmetic, and refused by the replicate pass's check when
even perfect packing does not fit (both in cimc/dialect/chip.py). Only the
initializers' dims are read.
In a quantized model only a float Conv/Gemm/MatMul that reads a
DequantizeLinear and whose result a QuantizeLinear reads later becomes an
integer op (fold-qdq's pattern); the others are host work and not counted
(an undercount only leaves the refusal to the tile pass). Every
block the shapes make nonzero is counted: only a model with whole blocks of
zero weights (pruned) could need fewer. Weights computed by other
nodes are not counted (the tile pass still checks them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import onnx

from cimc.dialect.chip import block_columns, channel_too_big, check_columns, kept_blocks
from cimc.targets import Target

# The float forms: on the chip only where their result is quantized again.
FLOAT_FORMS = frozenset({"Conv", "Gemm", "MatMul"})
# Op type -> index of its weight input.
WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3,
                "Gemm": 1, "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}


def _holds_its_dims(init: onnx.TensorProto) -> bool:
    """Whether an initializer stored in the file is big enough for the values its dims
    declare (at least half a byte each, as int4 packs them). The checker, which runs
    after this count, rejects one that is not: a small file whose dims claim 2^40 weights
    must not be counted block by block. External data is taken at its word."""
    if init.data_location == onnx.TensorProto.EXTERNAL:
        return True
    return 2 * init.ByteSize() >= math.prod(init.dims)


def _requantized(graph: onnx.GraphProto) -> set[str] | None:
    """The values a QuantizeLinear later reads (through any ops), or None for a float
    model, which is quantized whole."""
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input]
    if not quantizers:
        return None
    reached = {n.input[0] for n in quantizers}
    changed = True
    while changed:  # one or two sweeps when the nodes are in topological order
        changed = False
        for node in reversed(graph.node):
            if node.op_type != "QuantizeLinear" and reached.intersection(node.output):
                new = set(node.input) - reached
                if new:
                    reached |= new
                    changed = True
    return reached


def weight_matrices(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, int, int, int]]:
    """(node, K, N, groups) of every node that will become a matvec of a `[K, N]` matrix."""
    dims = {init.name: tuple(int(d) for d in init.dims) for init in graph.initializer
            if _holds_its_dims(init)}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in dims:
            dims.setdefault(node.output[0], dims[node.input[0]])
    requantized = _requantized(graph)
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for node in graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in dims:
            continue
        if node.op_type in FLOAT_FORMS and requantized is not None and not (
                node.output[0] in requantized and node.input[0] in dequantized):
            continue  # not a DequantizeLinear -> op -> QuantizeLinear pattern: host work
        shape = dims[node.input[index]]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        # A malformed attribute is skipped here: the checker and import name it later.
        if not all(isinstance(attrs.get(key, 0), int) for key in ("group", "transB")):
            continue
        if "Conv" in node.op_type:
            groups = attrs.get("group", 1)
            if len(shape) < 3 or groups < 1 or min(shape) < 1:
                continue
            per_group = 1
            for d in shape[1:]:
                per_group *= d
            yield node, groups * per_group, shape[0], groups
        elif len(shape) == 2 and min(shape) >= 1:
            # ONNX's MatMul weights are [K, N]; Gemm's too unless transB = 1.
            k, n = shape[::-1] if node.op_type == "Gemm" and attrs.get("transB", 0) else shape
            yield node, k, n, 1


def weight_columns(graph: onnx.GraphProto, target: Target) -> int:
    """Cell columns the tile pass will give the graph's weights (dense in their shapes)."""
    total = 0
    for _, k, n, groups in weight_matrices(graph):
        rows, cols = k // groups, max(1, n // groups)  # one group's diagonal block

        def nonzero(r: slice, c: slice, rows: int = rows, cols: int = cols) -> bool:
            # The groups whose columns meet c have rows [first * rows, (last + 1) * rows).
            first, last = c.start // cols, (c.stop - 1) // cols
            return r.start < (last + 1) * rows and first * rows < r.stop

        total += block_columns(k, n, kept_blocks(k, n, target, nonzero), target)
    return total


def check_capacity(model: onnx.ModelProto, target: Target, path: str) -> None:
    """CimcError naming `path` when the weights cannot fit the target's crossbars: all of
    them at once on a target whose crossbars cannot be reprogrammed, else (the model may
    run in phases, passes/partition.py) one output channel of every layer (its column of
    weights, all row blocks of it)."""
    if not target.reprogrammable:
        check_columns(weight_columns(model.graph, target), target, f"{path}: the model")
        return
    for node, k, _, _ in weight_matrices(model.graph):
        row_blocks = -(-k // target.rows)
        needed = -(-row_blocks * target.slices // target.cols)
        if needed > target.total_crossbars:
            raise channel_too_big(f"{path}: node {node.name or node.output[0]!r}", row_blocks,
                                  needed, target)
