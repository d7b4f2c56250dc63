"""A deterministic corpus of mutated versions of the bundled MNIST model, and a
runner that checks what cimc does with each (tests/test_mutants.py).

`mutant(index)` returns mutant number `index`: its mutation kind is
KINDS[index % len(KINDS)], so every prefix of the corpus covers the kinds
evenly, and its random choices come from a numpy generator seeded with
(SEED, index), so a mutant does not depend on the corpus size. The kinds:
bit flips, byte edits and truncations of the serialized file; protobuf edits
of attributes (values, types, missing, extra), initializers (dims, data,
element type), scales (0, negative, inf, nan, 1e-30, 1e30...) and zero points
(out of range, wrong type or shape), opset and IR versions, nodes (removed,
renamed op, unknown domain, shuffled), edges (dangling, rewired, duplicate
names), graph inputs and outputs (removed, added, renamed, reshaped,
retyped) and value_info; and pairs of these.

`check(mutant, workdir)` compiles it with the CLI in a forked child under a
time and memory limit and sorts the run into an outcome: "compiled" (the
program simulates equal to the reference interpreter, bit for bit) or
"error" (exit status 1, one `cimc: ... error: ...` message on stderr, no output
file) are passes; everything else is a failure to fix.

Reproduce and run from the command line (from the repository root):

    PYTHONPATH=. python tests/mnist_mutants.py write 17 -o mut17.onnx
    PYTHONPATH=. python tests/mnist_mutants.py run 0:600       # counts per outcome
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"
DIGITS = ROOT / "examples" / "mnist" / "test_digits.npz"
SEED = 0
# A run longer than this is a hang (a clean compile and check of MNIST takes ~2 s).
TIMEOUT_SECONDS = 60.0
# Address-space limit of the child: a mutant asking for a huge tensor must fail
# with a message, not take the machine's memory.
MEMORY_LIMIT_BYTES = 6 << 30
SAMPLES = 4  # test digits simulated per compiled mutant
OUTCOMES_PASSING = ("compiled", "error")


@dataclass(frozen=True)
class Mutant:
    index: int
    kind: str
    description: str
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.index:03d}-{self.kind}"


# Byte-level mutations of the serialized model: (data, rng) -> (data, description).


def _bit_flips(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    blob = bytearray(data)
    count = int(rng.choice([1, 2, 4, 8, 32]))
    where = sorted(int(i) for i in rng.integers(0, len(blob) * 8, count))
    for bit in where:
        blob[bit // 8] ^= 1 << (bit % 8)
    return bytes(blob), f"flip bits {where}"


def _byte_edits(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    blob = bytearray(data)
    edits = []
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(0, len(blob)))
        how = str(rng.choice(["set", "delete", "insert", "duplicate"]))
        if how == "set":
            blob[i] = int(rng.integers(0, 256))
        elif how == "delete":
            del blob[i:i + int(rng.integers(1, 65))]
        elif how == "insert":
            blob[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 9))).tolist())
        else:
            blob[i:i] = blob[i:i + int(rng.integers(1, 65))]
        edits.append(f"{how}@{i}")
    return bytes(blob), "bytes " + ", ".join(edits)


def _truncate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    # Half near the end: the graph's tail (outputs, opset) is what gets cut then.
    cut = int(rng.integers(0, len(data))) if rng.random() < 0.5 else \
        len(data) - int(rng.integers(1, 600))
    return data[:cut], f"truncate to {cut} of {len(data)} bytes"


# Protobuf-level mutations: (model, rng) -> description; they edit `model` in place.

def _pick(rng: np.random.Generator, items: list):  # -> one of items
    return items[int(rng.integers(0, len(items)))]


def _initializer(model: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set_array(tensor: TensorProto, array: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


INT_LISTS = {
    "kernel_shape": [[1, 1], [2, 3], [5, 5], [29, 29], [0, 0], [-1, 3], [3], [3, 3, 3], []],
    "strides": [[2, 2], [3, 1], [0, 0], [-1, -1], [100, 100], [1], [1, 1, 1]],
    "pads": [[0, 0, 0, 0], [2, 2, 2, 2], [1, 0, 1, 0], [0, 1, 2, 3], [-1, -1, -1, -1],
             [40, 40, 40, 40], [1, 1], [5, 5, 0, 0]],
    "dilations": [[2, 2], [3, 1], [0, 0], [-2, -2], [1], [30, 30]],
}
INT_VALUES = {
    "group": [0, 2, 4, 8, 16, -1, 3],
    "axis": [-5, -1, 1, 2, 3, 7],
    "transB": [0, 2, -1],
    "transA": [1],
    "allowzero": [0, 2],
    "ceil_mode": [1, 2],
    "storage_order": [1],
}


def _attribute_int(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    choices = [(node, attr) for node in model.graph.node for attr in node.attribute
               if attr.name in INT_LISTS or attr.name in INT_VALUES]
    node, attr = _pick(rng, choices)
    if attr.name in INT_LISTS:
        value = _pick(rng, INT_LISTS[attr.name])
        attr.CopyFrom(helper.make_attribute(attr.name, value, attr_type=AttributeProto.INTS))
    else:
        value = _pick(rng, INT_VALUES[attr.name])
        attr.CopyFrom(helper.make_attribute(attr.name, value))
    return f"{node.name}.{attr.name} = {value}"


def _attribute_other(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """Float and string attributes: Gemm alpha/beta, auto_pad."""
    choices = [(node, attr) for node in model.graph.node for attr in node.attribute
               if attr.name in ("alpha", "beta", "auto_pad")]
    node, attr = _pick(rng, choices)
    if attr.name == "auto_pad":
        value: object = _pick(rng, ["SAME_UPPER", "SAME_LOWER", "VALID", "", "BOGUS"])
    else:
        value = float(_pick(rng, [0.0, -1.0, 2.0, 0.5, np.nan, np.inf, 1e30, 1e-30]))
    attr.CopyFrom(helper.make_attribute(attr.name, value))
    return f"{node.name}.{attr.name} = {value!r}"


EXTRA_ATTRIBUTES: list[tuple[str, object]] = [
    ("axis", 1), ("axis", -1), ("axis", 7), ("block_size", 2), ("saturate", 0),
    ("output_dtype", 3), ("group", 2), ("dilations", [2, 2]), ("bogus", 1),
    ("auto_pad", "SAME_UPPER"), ("auto_pad", "VALID"), ("transA", 1), ("ceil_mode", 1),
    ("pads", [1, 1, 1, 1]), ("kernel_shape", [3, 3]), ("strides", [2, 2]),
]


def _attribute_add(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    node = _pick(rng, list(model.graph.node))
    name, value = _pick(rng, EXTRA_ATTRIBUTES)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])
    return f"{node.name} ({node.op_type}): set attribute {name} = {value!r}"


def _attribute_remove(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    node = _pick(rng, [n for n in model.graph.node if n.attribute])
    attr = _pick(rng, list(node.attribute))
    node.attribute.remove(attr)
    return f"{node.name}: remove attribute {attr.name}"


def _attribute_type(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """An attribute of the right name with a value of the wrong type."""
    node = _pick(rng, [n for n in model.graph.node if n.attribute])
    attr = _pick(rng, list(node.attribute))
    value = _pick(rng, [1.5, "3", [1.0, 2.0], [b"a"], 7, []])
    if value == []:
        replacement = AttributeProto(name=attr.name, type=AttributeProto.INTS)
    else:
        replacement = helper.make_attribute(attr.name, value)
    attr.CopyFrom(replacement)
    return f"{node.name}.{attr.name} retyped to {value!r}"


def _initializer_dims(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    tensor = _pick(rng, list(model.graph.initializer))
    dims = list(tensor.dims)
    how = _pick(rng, ["reverse", "append1", "drop", "double", "zero", "negative", "huge"])
    if how == "reverse":
        dims = dims[::-1]
    elif how == "append1":
        dims = dims + [1]
    elif how == "drop" and dims:
        dims = dims[1:]
    elif how == "double" and dims:
        dims[0] *= 2
    elif how == "zero":
        dims = [0] + dims[1:]
    elif how == "negative":
        dims = [-1] + dims[1:]
    else:
        dims = [1 << 40] + dims[1:]
    del tensor.dims[:]
    tensor.dims.extend(dims)
    return f"initializer {tensor.name} dims -> {dims} ({how})"


def _initializer_data(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    tensor = _pick(rng, list(model.graph.initializer))
    array = numpy_helper.to_array(tensor)
    how = _pick(rng, ["random", "max", "min", "zeros", "shorter", "longer", "typed-field"])
    if how in ("random", "max", "min", "zeros"):
        if how == "random":
            raw = rng.integers(0, 256, array.nbytes, dtype=np.uint8).tobytes()
            array = np.frombuffer(raw, dtype=array.dtype).reshape(array.shape).copy()
        else:
            info = (np.iinfo if np.issubdtype(array.dtype, np.integer) else np.finfo)(array.dtype)
            array = np.full_like(array, {"max": info.max, "min": info.min, "zeros": 0}[how])
        _set_array(tensor, array)
    else:
        raw = tensor.raw_data or array.tobytes()
        if how == "shorter":
            raw = raw[: max(len(raw) - int(rng.integers(1, 9)), 0)]
        elif how == "longer":
            raw = raw + bytes(int(rng.integers(1, 9)))
        else:  # the values in a typed field *and* raw bytes
            tensor.int32_data.extend([1, 2, 3])
        if how != "typed-field":
            tensor.raw_data = raw
    return f"initializer {tensor.name} data: {how}"


DTYPES = [TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.INT32,
          TensorProto.INT64, TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
          TensorProto.BOOL, TensorProto.UINT16, TensorProto.INT4, TensorProto.STRING,
          TensorProto.UNDEFINED, 99]


def _initializer_dtype(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    tensor = _pick(rng, list(model.graph.initializer))
    dtype = int(_pick(rng, DTYPES))
    if rng.random() < 0.5 and dtype not in (TensorProto.STRING, TensorProto.UNDEFINED, 99,
                                            TensorProto.INT4):
        # The values converted (a well-formed tensor of another type).
        array = numpy_helper.to_array(tensor)
        np_type = helper.tensor_dtype_to_np_dtype(dtype)
        with np.errstate(all="ignore"):
            _set_array(tensor, array.astype(np_type))
        how = "cast"
    else:
        tensor.data_type = dtype  # the raw bytes kept: their size no longer fits
        how = "relabel"
    return f"initializer {tensor.name} type -> {TensorProto.DataType.Name(dtype) if dtype != 99 else 99} ({how})"  # noqa: E501


SCALES = [0.0, -0.0, -1.0, -0.01, np.inf, -np.inf, np.nan, 1e-30, 1e30, 1e-45, 3.4e38,
          1e-10, 1e10, 1.0, 2.0 ** -20]


def _scale(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    tensor = _pick(rng, [t for t in model.graph.initializer if t.name.endswith("_scale")])
    array = numpy_helper.to_array(tensor).copy()
    value = float(_pick(rng, SCALES))
    if array.ndim and rng.random() < 0.5:
        i = int(rng.integers(0, array.size))
        array.flat[i] = value
        where = f"[{i}]"
    else:
        array[...] = value
        where = ""
    with np.errstate(all="ignore"):
        _set_array(tensor, array.astype(np.float32))
    return f"{tensor.name}{where} = {value!r}"


def _zero_point(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    tensor = _pick(rng, [t for t in model.graph.initializer if t.name.endswith("zero_point")])
    array = numpy_helper.to_array(tensor)
    how = _pick(rng, ["extreme", "int32-out-of-range", "other-int8-type", "int16", "float",
                      "int32", "shape", "nonzero", "uint16"])
    if how == "extreme":
        info = np.iinfo(array.dtype)
        value = info.max if rng.random() < 0.5 else info.min
        _set_array(tensor, np.full_like(array, value))
        how += f" {value}"
    elif how == "int32-out-of-range":
        value = int(_pick(rng, [-1, 256, -129, 128, 1000, -(2 ** 31)]))
        _set_array(tensor, np.full(array.shape, value, np.int32))
        how += f" {value}"
    elif how == "other-int8-type":
        other = np.uint8 if array.dtype == np.int8 else np.int8
        with np.errstate(all="ignore"):
            _set_array(tensor, array.astype(np.int16).clip(-128, 255).astype(other))
    elif how == "int16":
        _set_array(tensor, np.full(array.shape, -200, np.int16))
    elif how == "float":
        _set_array(tensor, array.astype(np.float32))
    elif how == "int32":
        _set_array(tensor, array.astype(np.int32))
    elif how == "uint16":
        _set_array(tensor, array.astype(np.uint16))
    elif how == "shape":
        _set_array(tensor, np.zeros((3,) if array.ndim == 0 else (), array.dtype))
    else:  # valid, and unusual: non-zero (weights: asymmetric) zero points
        info = np.iinfo(array.dtype)
        _set_array(tensor, rng.integers(info.min, int(info.max) + 1, array.shape)
                   .astype(array.dtype))
    return f"{tensor.name}: {how}"


def _opset(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    how = _pick(rng, ["version", "version", "unknown-domain", "remove", "duplicate", "domain"])
    if how == "version":
        version = int(_pick(rng, [1, 6, 9, 10, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25,
                                  99, 100000]))
        model.opset_import[0].version = version
        return f"opset_import version -> {version}"
    if how == "unknown-domain":
        model.opset_import.append(helper.make_opsetid("com.bogus", 1))
    elif how == "remove":
        del model.opset_import[:]
    elif how == "duplicate":
        model.opset_import.append(helper.make_opsetid("", 13))
    else:
        model.opset_import[0].domain = "ai.onnx.ml"
    return f"opset_import: {how}"


def _ir_version(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    version = int(_pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 100, 2 ** 40]))
    model.ir_version = version
    return f"ir_version -> {version}"


def _node_remove(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    node = _pick(rng, list(model.graph.node))
    model.graph.node.remove(node)
    return f"remove node {node.name} ({node.op_type})"


def _node_bypass(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """Remove a node and feed its consumers its first input (a checker-valid removal)."""
    graph = model.graph
    how = _pick(rng, ["node", "qdq-pair"])
    if how == "qdq-pair":  # a float op mid-graph: its output is no longer quantized
        pairs = [(q, d) for q in graph.node for d in graph.node
                 if q.op_type == "QuantizeLinear" and d.op_type == "DequantizeLinear"
                 and d.input[0] == q.output[0]]
        q, d = _pick(rng, pairs)
        removed, source, result = [q, d], q.input[0], d.output[0]
    else:
        node = _pick(rng, [n for n in graph.node if n.input and n.input[0] not in
                           {t.name for t in graph.initializer}])
        removed, source, result = [node], node.input[0], node.output[0]
    for node in removed:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == result:
                node.input[i] = source
    for out in graph.output:
        if out.name == result:
            out.name = source
    return "bypass " + " + ".join(f"{n.name} ({n.op_type})" for n in removed)


# Ops inserted on an edge: (op_type, attributes); they keep the element type.
INSERTED: list[tuple[str, dict[str, object]]] = [
    ("Relu", {}), ("Identity", {}), ("Sigmoid", {}), ("Tanh", {}), ("Neg", {}), ("Abs", {}),
    ("Softmax", {"axis": 1}), ("Softmax", {"axis": -1}), ("Flatten", {"axis": 1}),
    ("Transpose", {"perm": [0, 1, 3, 2]}), ("Transpose", {"perm": [0, 2, 3, 1]}),
    ("Transpose", {"perm": [1, 0]}), ("Transpose", {"perm": [0, 0]}),
    ("Clip", {}), ("LeakyRelu", {"alpha": 0.1}), ("Dropout", {}),
    ("AveragePool", {"kernel_shape": [1, 1]}), ("MaxPool", {"kernel_shape": [3, 3]}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("GlobalAveragePool", {}), ("Exp", {}), ("ReduceMean", {"keepdims": 1}),
]
# Shape-keeping ops the backend runs when quantized around.
QUANTIZABLE: list[tuple[str, dict[str, object]]] = [
    ("Relu", {}), ("Identity", {}), ("Add", {}), ("Sub", {}), ("Mul", {}),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0], "count_include_pad": 1}),
]


def _node_insert(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """Insert an op (or a QuantizeLinear/DequantizeLinear pair) on a float edge."""
    graph = model.graph
    edges = [(n, i) for n in graph.node for i, name in enumerate(n.input)
             if name.endswith("DequantizeLinear_Output") and n.op_type != "QuantizeLinear"]
    edges += [(n, 0) for n in graph.node if n.op_type == "QuantizeLinear"]
    consumer, i = _pick(rng, edges)
    value = consumer.input[i]
    position = list(graph.node).index(consumer)
    how = rng.random()
    nodes, what, source = [], "", value
    if how < 0.6:  # an op on the float edge; half of them quantized after (an integer op)
        op, attrs = _pick(rng, INSERTED + QUANTIZABLE)
        nodes.append(helper.make_node(op, [value] * (2 if op in ("Add", "Sub", "Mul") else 1),
                                      ["inserted_op"], name="inserted_op", **attrs))
        what, source = f"{op} {attrs}", "inserted_op"
    if how >= 0.3:  # a requantization, with a usual or an extreme scale and zero point
        scale = float(_pick(rng, [1e-30, 1e-8, 0.001, 0.01, 0.05, 0.2, 1.0, 1e8, 1e30]
                            if how >= 0.85 else [0.003, 0.01, 0.03, 0.1]))
        zero = _pick(rng, [np.uint8(0), np.uint8(255), np.uint8(17), np.int8(-128),
                           np.int8(127), np.int8(0), np.int8(-5)])
        graph.initializer.extend([
            numpy_helper.from_array(np.array(scale, np.float32), "inserted_scale"),
            numpy_helper.from_array(np.array(zero), "inserted_zero_point")])
        nodes += [helper.make_node("QuantizeLinear", [source, "inserted_scale",
                                                      "inserted_zero_point"], ["inserted_q"],
                                   name="inserted_q"),
                  helper.make_node("DequantizeLinear", ["inserted_q", "inserted_scale",
                                                        "inserted_zero_point"], ["inserted_dq"],
                                   name="inserted_dq")]
        what += f" QDQ scale={scale!r} zero point={zero!r} ({zero.dtype})"
        source = "inserted_dq"
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    consumer.input[i] = source
    return f"insert {what.strip()} before {consumer.name} input {i}"


def _conv_group(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """The second conv as a grouped one (weights cut to its input channels per group):
    a valid model exercising grouped and depthwise lowering."""
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    group = int(_pick(rng, [2, 4, 8]))
    weight_dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    tensor = _initializer(model, weight_dq.input[0])
    weights = numpy_helper.to_array(tensor)
    _set_array(tensor, np.ascontiguousarray(weights[:, : weights.shape[1] // group]))
    for attr in conv.attribute:
        if attr.name == "group":
            attr.i = group
    return f"{conv.name}: group {group}"


# Attribute sets that keep every tensor's shape: (op type, index among its kind, attrs).
SHAPE_KEEPING: list[tuple[str, int, dict[str, object]]] = [
    ("Conv", 0, {"pads": [0, 0, 2, 2]}),
    ("Conv", 1, {"pads": [2, 2, 0, 0]}),
    ("Conv", 0, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ("Conv", 1, {"dilations": [2, 2], "pads": [2, 1, 2, 3]}),
    ("Conv", 1, {"auto_pad": "SAME_UPPER", "pads": None}),
    ("MaxPool", 0, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("MaxPool", 1, {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1]}),
    ("MaxPool", 0, {"kernel_shape": [4, 4], "pads": [1, 1, 1, 1]}),
    ("MaxPool", 1, {"pads": [1, 1, 0, 0]}),
    ("MaxPool", 0, {"ceil_mode": 1}),
    ("MaxPool", 1, {"ceil_mode": 1, "kernel_shape": [3, 3]}),
    ("MaxPool", 0, {"dilations": [2, 2], "pads": [1, 1, 0, 0]}),
    ("AveragePool", 0, {}),
    ("AveragePool", 1, {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}),
    ("AveragePool", 1, {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3], "count_include_pad": 1}),
    ("AveragePool", 0, {"ceil_mode": 1, "kernel_shape": [3, 3], "pads": [0, 0, 1, 1]}),
]


def _shape_keeping(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    op, index, attrs = _pick(rng, SHAPE_KEEPING)
    node = [n for n in model.graph.node
            if n.op_type == ("MaxPool" if op == "AveragePool" else op)][index]
    node.op_type = op
    kept = [a for a in node.attribute if a.name not in attrs
            and not (op == "AveragePool" and a.name in ("storage_order", "dilations"))]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(k, v) for k, v in attrs.items()
                                  if v is not None])
    return f"{node.name} -> {op} {attrs}"


def _float_model(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """The float model behind the QDQ one (cimc quantizes it on random data), then
    one edit of its shapes or attributes."""
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    replace: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in constants:
            x, scale = constants[node.input[0]], constants[node.input[1]]
            zero = constants[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale)
            shape = [-1] + [1] * (x.ndim - 1) if scale.ndim else []
            real = (x.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
            graph.initializer.append(numpy_helper.from_array(real.astype(np.float32),
                                                             node.output[0]))
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            replace[node.output[0]] = replace.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = replace.get(name, name)
    for out in graph.output:
        out.name = replace.get(out.name, out.name)
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    then = _pick(rng, ["none", "attribute-int", "shape-keeping", "input-shape", "node-insert",
                       "reshape-target"])
    edit = "" if then == "none" else "; " + MODEL_KINDS[then](model, rng)
    return "float model" + edit


OP_TYPES = ["Relu", "Identity", "Softmax", "Sigmoid", "Add", "Mul", "Conv", "MaxPool",
            "AveragePool", "GlobalAveragePool", "Gemm", "MatMul", "Flatten", "Transpose",
            "QuantizeLinear", "DequantizeLinear", "Clip", "Concat", "Bogus", "",
            "LSTM", "Loop"]


def _node_op_type(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    node = _pick(rng, list(model.graph.node))
    old = node.op_type
    node.op_type = _pick(rng, OP_TYPES)
    return f"{node.name}: op {old} -> {node.op_type!r}"


def _node_domain(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    node = _pick(rng, list(model.graph.node))
    node.domain = _pick(rng, ["com.microsoft", "ai.onnx.ml", "com.bogus", "ai.onnx"])
    return f"{node.name}: domain -> {node.domain!r}"


def _values(model: onnx.ModelProto) -> list[str]:
    """Every value name of the graph: inputs, initializers, node outputs."""
    names = [i.name for i in model.graph.input] + [t.name for t in model.graph.initializer]
    return names + [o for n in model.graph.node for o in n.output]


def _edge(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    node = _pick(rng, list(model.graph.node))
    how = _pick(rng, ["dangle-input", "dangle-output", "rewire", "rewire", "drop-input",
                      "extra-input", "empty-input", "swap-inputs", "self-loop"])
    if how == "dangle-input":
        i = int(rng.integers(0, len(node.input)))
        node.input[i] = "no_such_value"
    elif how == "dangle-output":
        node.output[0] = node.output[0] + "_renamed"
    elif how == "rewire":
        i = int(rng.integers(0, len(node.input)))
        node.input[i] = _pick(rng, _values(model))
        how += f" input {i} <- {node.input[i]}"
    elif how == "drop-input":
        del node.input[-1]
    elif how == "extra-input":
        node.input.append(_pick(rng, _values(model)))
    elif how == "empty-input":
        node.input[int(rng.integers(0, len(node.input)))] = ""
    elif how == "swap-inputs" and len(node.input) > 1:
        node.input[0], node.input[1] = node.input[1], node.input[0]
    else:
        node.input[0] = node.output[0]
    return f"{node.name} ({node.op_type}): {how}"


def _duplicate(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    graph = model.graph
    how = _pick(rng, ["node", "node-name", "initializer", "initializer-as-output",
                      "output-as-input", "value-as-initializer"])
    if how == "node":
        node = _pick(rng, list(graph.node))
        graph.node.insert(list(graph.node).index(node) + 1, copy.deepcopy(node))
        how += f" {node.name}"
    elif how == "node-name":
        a, b = graph.node[int(rng.integers(0, len(graph.node)))], graph.node[0]
        a.name = b.name
    elif how == "initializer":
        tensor = _pick(rng, list(graph.initializer))
        twin = copy.deepcopy(tensor)
        if rng.random() < 0.5:
            _set_array(twin, numpy_helper.to_array(tensor) * 0)
        graph.initializer.append(twin)
        how += f" {tensor.name}"
    elif how == "initializer-as-output":
        node = _pick(rng, list(graph.node))
        twin = copy.deepcopy(_pick(rng, list(graph.initializer)))
        twin.name = node.output[0]
        graph.initializer.append(twin)
        how += f" {node.output[0]}"
    elif how == "output-as-input":
        node = _pick(rng, list(graph.node))
        node.output[0] = graph.input[0].name
        how += f" by {node.name}"
    else:
        value = graph.input[0]
        graph.initializer.append(numpy_helper.from_array(
            np.zeros((1, 1, 28, 28), np.float32), value.name))
    return f"duplicate name: {how}"


def _graph_input(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    graph = model.graph
    how = _pick(rng, ["remove", "rename", "extra-unused", "extra-used", "second-copy"])
    if how == "remove":
        del graph.input[:]
    elif how == "rename":
        graph.input[0].name = "renamed_image"
    elif how == "extra-unused":
        graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 4]))
    elif how == "extra-used":
        # A second input feeding the Gemm's bias path: a model with two inputs.
        graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 10]))
        gemm = next(n for n in graph.node if n.op_type == "Gemm")
        gemm.input[2] = "extra"
    else:
        graph.input.append(copy.deepcopy(graph.input[0]))
    return f"graph input: {how}"


def _typed(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    """A value_info for `name` with its inferred type (an untyped one when inference
    does not know it)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    found = next((v for v in infos if v.name == name), None)
    if found is not None:
        return copy.deepcopy(found)
    tensor = next((t for t in model.graph.initializer if t.name == name), None)
    if tensor is None:
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims))


def _graph_output(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    graph = model.graph
    node = _pick(rng, list(graph.node))
    how = _pick(rng, ["remove", "rename", "add-intermediate", "add-input", "duplicate",
                      "replace-intermediate", "add-initializer"])
    if how == "remove":
        del graph.output[:]
    elif how == "rename":
        graph.output[0].name = "no_such_output"
    elif how == "add-intermediate":
        graph.output.append(_typed(model, node.output[0]))
        how += f" {node.output[0]}"
    elif how == "add-input":
        graph.output.append(copy.deepcopy(graph.input[0]))
    elif how == "duplicate":
        graph.output.append(copy.deepcopy(graph.output[0]))
    elif how == "replace-intermediate":
        graph.output[0].CopyFrom(_typed(model, node.output[0]))
        how += f" {node.output[0]}"
    else:
        graph.output.append(_typed(model, graph.initializer[0].name))
    return f"graph output: {how}"


def _set_dims(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        elif d is not None:
            dim.dim_value = d


def _input_shape(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    value = model.graph.input[0]
    how = _pick(rng, ["batch", "batch", "spatial", "spatial", "channels", "rank",
                      "no-shape", "unknown-dim", "elem-type"])
    dims: list = [1, 1, 28, 28]
    if how == "batch":
        dims[0] = _pick(rng, [2, 3, 0, -1, "N"])
    elif how == "spatial":
        dims[2] = _pick(rng, [1, 2, 4, 27, 29, 32, 56, 100000])
        if rng.random() < 0.5:
            dims[3] = dims[2]
    elif how == "channels":
        dims[1] = _pick(rng, [3, 0, 2])
    elif how == "rank":
        dims = _pick(rng, [[1, 28, 28], [1, 1, 1, 28, 28], [784], [], [1, 784]])
    elif how == "no-shape":
        value.type.tensor_type.ClearField("shape")
        return "graph input: no shape"
    elif how == "unknown-dim":
        dims[int(rng.integers(0, 4))] = None
    else:
        elem = int(_pick(rng, [TensorProto.UINT8, TensorProto.INT8, TensorProto.DOUBLE,
                               TensorProto.FLOAT16, TensorProto.INT64, TensorProto.STRING,
                               TensorProto.UNDEFINED]))
        value.type.tensor_type.elem_type = elem
        return f"graph input: element type {elem}"
    _set_dims(value, dims)
    return f"graph input: shape {dims}"


def _output_type(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    value = model.graph.output[0]
    if rng.random() < 0.5:
        elem = int(_pick(rng, [TensorProto.UINT8, TensorProto.INT8, TensorProto.DOUBLE,
                               TensorProto.INT64, TensorProto.UNDEFINED]))
        value.type.tensor_type.elem_type = elem
        return f"graph output: element type {elem}"
    dims = _pick(rng, [[1, 11], [2, 10], [10], [1, 10, 1], [], ["N", 10], [1, 0]])
    _set_dims(value, dims)
    return f"graph output: shape {dims}"


def _reshape_target(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    target = _pick(rng, [[-1, 784], [1, -1], [0, 784], [0, -1], [784, 1], [2, -1], [-1, -1],
                         [1, 783], [1, 784, 1], [-2, 784], [1, 16, 49], [28, 28], [1],
                         [4, 196]])
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    _set_array(_initializer(model, reshape.input[1]), np.array(target, np.int64))
    return f"reshape target -> {target}"


def _node_order(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    nodes = list(model.graph.node)
    how = _pick(rng, ["shuffle", "reverse", "cycle"])
    if how == "shuffle":
        nodes = [nodes[i] for i in rng.permutation(len(nodes))]
    elif how == "reverse":
        nodes = nodes[::-1]
    else:  # the first Conv reads the output of the last node: a cycle
        conv = next(n for n in nodes if n.op_type == "Conv")
        conv.input[0] = nodes[-1].output[0]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return f"node order: {how}"


def _value_info(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    graph = model.graph
    how = _pick(rng, ["shape", "elem-type", "bogus", "clear"])
    if how == "clear" or not graph.value_info:
        del graph.value_info[:]
        return "value_info: cleared"
    value = _pick(rng, list(graph.value_info))
    if how == "shape":
        _set_dims(value, _pick(rng, [[1, 3, 5, 5], [2], [], [1, 8, 28, 28, 1], ["n", 7]]))
    elif how == "elem-type":
        value.type.tensor_type.elem_type = int(_pick(rng, [TensorProto.INT8, TensorProto.DOUBLE,
                                                           TensorProto.STRING]))
    else:
        graph.value_info.append(helper.make_tensor_value_info("not_a_value", TensorProto.FLOAT,
                                                              [1]))
    return f"value_info {value.name}: {how}"


ModelMutation = Callable[[onnx.ModelProto, np.random.Generator], str]
ByteMutation = Callable[[bytes, np.random.Generator], tuple[bytes, str]]

BYTE_KINDS: dict[str, ByteMutation] = {
    "bit-flip": _bit_flips,
    "byte-edit": _byte_edits,
    "truncate": _truncate,
}
MODEL_KINDS: dict[str, ModelMutation] = {
    "attribute-int": _attribute_int,
    "attribute-other": _attribute_other,
    "attribute-add": _attribute_add,
    "attribute-remove": _attribute_remove,
    "attribute-type": _attribute_type,
    "initializer-dims": _initializer_dims,
    "initializer-data": _initializer_data,
    "initializer-dtype": _initializer_dtype,
    "scale": _scale,
    "zero-point": _zero_point,
    "opset": _opset,
    "ir-version": _ir_version,
    "node-remove": _node_remove,
    "node-bypass": _node_bypass,
    "node-insert": _node_insert,
    "conv-group": _conv_group,
    "shape-keeping": _shape_keeping,
    "float-model": _float_model,
    "node-op-type": _node_op_type,
    "node-domain": _node_domain,
    "edge": _edge,
    "duplicate": _duplicate,
    "graph-input": _graph_input,
    "graph-output": _graph_output,
    "input-shape": _input_shape,
    "output-type": _output_type,
    "reshape-target": _reshape_target,
    "node-order": _node_order,
    "value-info": _value_info,
}
# The scale, zero-point, insert and shape-keeping edits are the most likely to reach the
# backend: twice the share.
KINDS: list[str] = [*BYTE_KINDS, *MODEL_KINDS, "scale", "zero-point", "node-insert",
                    "shape-keeping", "pair"]


def mutant(index: int, seed: int = SEED, base: Path = MNIST) -> Mutant:
    """Mutant number `index` of the corpus (the same bytes every run)."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[index % len(KINDS)]
    data = base.read_bytes()
    if kind in BYTE_KINDS:
        data, description = BYTE_KINDS[kind](data, rng)
        return Mutant(index, kind, description, data)
    model = onnx.load_from_string(data)
    kinds = [kind] if kind != "pair" else list(rng.choice(sorted(MODEL_KINDS), 2, replace=False))
    description = "; ".join(MODEL_KINDS[k](model, rng) for k in kinds)
    return Mutant(index, kind, description, model.SerializeToString())


# Running a mutant through the CLI.


@dataclass
class Outcome:
    """What happened to one mutant: `kind` is one of compiled / error (passes), crash /
    message / internal / mismatch / hang / leftover / killed."""

    kind: str
    detail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.kind in OUTCOMES_PASSING


def _feeds(module, rng: np.random.Generator) -> dict[str, np.ndarray]:  # module: a Module
    """Float inputs for every module input: test digits when the shape is MNIST's."""
    feeds = {}
    for name in module.inputs:
        ty = module.values[name]
        shape = tuple(ty.shape)
        if shape == (1, 1, 28, 28):
            feeds[name] = np.load(DIGITS)["images"][:SAMPLES, None].astype(np.float32)
        elif np.issubdtype(ty.numpy_dtype, np.integer):
            info = np.iinfo(ty.numpy_dtype)
            feeds[name] = rng.integers(info.min, int(info.max) + 1, (SAMPLES * shape[0], *shape[1:])
                                       ).astype(ty.numpy_dtype)
        else:
            feeds[name] = rng.random((SAMPLES * shape[0], *shape[1:])).astype(ty.numpy_dtype)
    return feeds


def _simulate_and_compare(model: str, program: Path, target: str) -> tuple[str, str]:
    """("compiled", "") when the program's outputs equal the reference's, else ("mismatch", why)."""
    from cimc.api import prepare
    from cimc.host.ports import reference_codes
    from cimc.isa.assembler import assemble_file
    from cimc.isa.image import load_image
    from cimc.isa.simulator import run_program
    from cimc.targets import load_target

    module = prepare(model)  # a float model quantized as compile does
    feeds = _feeds(module, np.random.default_rng(0))
    inputs, expected = reference_codes(module, feeds)
    codes, _ = run_program(assemble_file(program), load_image(program.with_suffix(".img")),
                           load_target(target), inputs)
    for name, want in expected.items():
        got = codes.get(name)
        if got is None or got.shape != want.shape or not np.array_equal(got, want):
            diff = "missing" if got is None else (
                f"shape {got.shape} vs {want.shape}" if got.shape != want.shape else
                f"{int((got != want).sum())} of {want.size} codes differ")
            return "mismatch", f"output {name}: {diff}"
    return "compiled", ""


def _child(mutant_path: str, out_dir: str, target: str, placer: str, log_path: str,
           result_path: str) -> None:
    """In the forked child: compile with the CLI, then check the program."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # Unbuffered, so that what was printed is in the log when the child exits.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    outcome, detail = "crash", ""
    try:
        from cimc.cli import main

        program = Path(out_dir) / "prog.s"
        status = main([mutant_path, "-o", str(program), "--target", target, "--placer", placer])
        outcome = f"status {status}"
        if status == 0:
            outcome, detail = _simulate_and_compare(mutant_path, program, target)
    except BaseException:  # noqa: B036 - the child reports whatever escaped the CLI
        detail = traceback.format_exc()
        print(detail, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    Path(result_path).write_text(f"{outcome}\n{detail}")
    os._exit(0)


def warm_up() -> None:
    """Import what a compile and check use, once, so that each forked child does not."""
    import importlib

    from cimc.pass_manager import parse_pipeline
    from cimc.passes import PASSES

    for module in ("cimc.cli", "cimc.cli.compile", "cimc.cli.run", "cimc.frontend.quantize",
                   "cimc.frontend.importer", "cimc.reference", "cimc.host.ports",
                   "cimc.codegen.generate", "cimc.isa.assembler", "cimc.isa.image",
                   "cimc.isa.simulator", "cimc.targets", "onnxruntime"):
        importlib.import_module(module)
    parse_pipeline(",".join(PASSES))


def check(mut: Mutant, workdir: Path, target: str = "isaac", placer: str = "sequential",
          timeout: float = TIMEOUT_SECONDS) -> Outcome:
    """Compile `mut` with the CLI in a forked child and sort the run into an Outcome."""
    warm_up()
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / f"{mut.name}.onnx"
    model.write_bytes(mut.data)
    out_dir = workdir / f"{mut.name}.out"
    out_dir.mkdir()
    log, result = workdir / f"{mut.name}.log", workdir / f"{mut.name}.result"
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            _child(str(model), str(out_dir), target, placer, str(log), str(result))
        finally:
            os._exit(3)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return Outcome("hang", f"no result after {timeout:g} s", timeout)
        time.sleep(0.02)
    seconds = time.monotonic() - start
    stderr = log.read_text(errors="replace") if log.exists() else ""
    if not result.exists():
        return Outcome("killed", f"child status {status:#x}\n{stderr}", seconds)
    outcome, _, detail = result.read_text().partition("\n")
    left = sorted(p.name for p in out_dir.iterdir())
    if outcome == "crash":
        return Outcome("crash", detail, seconds)
    if outcome == "mismatch":
        return Outcome("mismatch", detail, seconds)
    if outcome == "compiled":
        if left != ["prog.img", "prog.s"]:
            return Outcome("leftover", f"compiled, and the output directory holds {left}",
                           seconds)
        return Outcome("compiled", "", seconds)
    if "Traceback" in stderr:
        return Outcome("crash", stderr, seconds)
    # One message: its first line says `error:`; a list of offending nodes may follow it.
    lines = [line for line in stderr.splitlines()
             if line.strip() and not line.startswith("cimc: warning:")]
    if outcome != "status 1" or not lines or not lines[0].startswith("cimc: ") \
            or "error: " not in lines[0] or any("error:" in line for line in lines[1:]):
        return Outcome("message", f"{outcome}, stderr:\n{stderr}", seconds)
    if left:
        return Outcome("leftover", f"failed, and the output directory holds {left}", seconds)
    if "invalid IR after pass" in lines[0]:  # a pass broke the IR: cimc's bug, not the model's
        return Outcome("internal", lines[0], seconds)
    return Outcome("error", lines[0], seconds)


def _indices(text: str) -> list[int]:
    if ":" in text:
        first, last = text.split(":")
        return list(range(int(first), int(last)))
    return [int(i) for i in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write one mutant's .onnx file")
    write.add_argument("index", type=int)
    write.add_argument("-o", "--output", required=True)
    run = sub.add_parser("run", help="check mutants FIRST:LAST (or I,J,K), print outcomes")
    run.add_argument("indices", type=_indices)
    run.add_argument("--target", default="isaac")
    run.add_argument("--placer", default="sequential")
    run.add_argument("-v", "--verbose", action="store_true", help="print every mutant")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.command == "write":
        mut = mutant(args.index, args.seed)
        Path(args.output).write_bytes(mut.data)
        print(f"{mut.name}: {mut.description}")
        return 0
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="cimc-mutants-") as tmp:
        for index in args.indices:
            mut = mutant(index, args.seed)
            outcome = check(mut, Path(tmp), args.target, args.placer)
            counts[outcome.kind] += 1
            if args.verbose or not outcome.passed:
                head = outcome.detail.strip().splitlines()[-1:] if outcome.detail else [""]
                print(f"{mut.name} {outcome.kind} ({outcome.seconds:.1f} s): "
                      f"{mut.description} -> {head[0]}", flush=True)
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0 if all(k in OUTCOMES_PASSING for k in counts) else 1


if __name__ == "__main__":
    sys.exit(main())
