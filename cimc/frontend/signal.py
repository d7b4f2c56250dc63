"""1-D signals as images of one row: a model over [N, C, L] tensors with a 1-D
convolution or pool (Conv1d, MaxPool1d: keyword spotting, ECG) becomes the same model
over [N, C, 1, L]. A model without one keeps its rank-3 tensors.

The rewrite is exact: a 1-D convolution or pool is the 2-D one with a kernel of one
row, and [N, C, L] and [N, C, 1, L] hold their elements in the same order, so a
Flatten or Reshape after them is unchanged and a caller's [N, C, L] samples are read
as [N, C, 1, L] ones. Every signal gains the unit axis 2: the
graph's inputs and outputs, 1-D kernels, strides, pads and dilations, the weights of
1-D convolutions, constants broadcast against such tensors, the concat and split axis,
the target shapes of Reshapes, a Transpose's perm (time-major features [N, T, F] turned
into [N, F, T]), a Pad's pads or a Slice's axes, and a ReduceMean's or ReduceSum's
axes (a mean over time). A node this does not cover is an
error naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from cimc.diagnostics import CimcError

# Ops that work element by element or per channel: their attributes do not change.
SAME = frozenset({
    "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
    "Selu", "Softplus", "Gelu", "Erf", "Identity", "QuantizeLinear", "DequantizeLinear",
    "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Add", "Sub", "Mul", "Div",
    "Pow", "Flatten", "Dropout",
})
WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})


def lift_1d(model: onnx.ModelProto, path: str, aside: dict[str, Any]) -> bool:
    """Rewrite `model` (shapes inferred) in place as described above; whether it had rank-3
    tensors. `aside` holds large initializers taken out of the graph (name -> array)."""
    graph = model.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in [*graph.input, *graph.output, *graph.value_info]
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    inits = {init.name: init for init in graph.initializer}
    runtime = _signals(graph, {name for name, rank in ranks.items() if rank == 3
                               and name not in inits and name not in aside}, inits)
    if not runtime:
        return False  # no 1-D convolution or pool: rank-3 tensors are other data
    weights: set[str] = set()  # rank-2 and rank-3 constants to give the unit axis
    targets: set[str] = set()  # the target shapes of Reshapes
    producer = {out: node for node in graph.node for out in node.output}
    exits: dict[str, onnx.NodeProto] = {}  # Reshapes giving signals back as [A, B, C]
    for node in graph.node:
        touched = any(name in runtime for name in [*node.input, *node.output])
        if not touched:
            continue
        kind = node.op_type
        if kind in WINDOWED:
            _lift_attributes(node)
            if kind == "Conv":
                weight = node.input[1]
                source = producer.get(weight)
                if source is not None and source.op_type == "DequantizeLinear":
                    weight = source.input[0]
                weights.add(weight)
        elif kind in ("Concat", "Split"):
            _lift_axis(node, "axis")
        elif kind == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [2, 1, 0])
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute(
                "perm", [_lifted(perm[0]), _lifted(perm[1]), 2, _lifted(perm[2])]))
        elif kind in ("Pad", "Slice"):
            _lift_layout_inputs(graph, node, inits, path)
        elif kind == "Reshape":
            targets.add(node.input[1])
        elif kind in ("ReduceMean", "ReduceSum"):
            _lift_reduce_axes(graph, node, inits, path)
        elif kind in ("QuantizeLinear", "DequantizeLinear"):
            _lift_axis(node, "axis")
        elif kind in ("Unsqueeze", "Squeeze") and _axes(node, inits) in ([2], [-2]):
            # between [N, C, L] and [N, C, 1, L] (the dynamo exporter's 1-D pools): the
            # lifted tensor already has that axis
            del node.input[1:]
            del node.attribute[:]
            node.op_type = "Identity"
        elif kind == "Flatten" and any(a.name == "axis" and a.i not in (1, -2, -1)
                                       for a in node.attribute):
            raise _refuse(path, node, "flattens from axis 2")
        elif kind not in SAME:
            if any(name in runtime for name in node.output):
                raise _refuse(path, node, "is not an op the rewrite to rows covers")
            _unlift_inputs(graph, node, runtime, inits, exits)  # the signal leaves here
        if kind in ("Add", "Sub", "Mul", "Div", "Pow"):
            weights.update(name for name in node.input if name in inits or name in aside)
    for name in sorted(targets & set(inits)):
        target = numpy_helper.to_array(inits[name])
        if len(target) == 3:
            _replace(inits[name], np.insert(target, 2, 1))
    for name in sorted(weights):
        array = aside.get(name)
        if array is None and name in inits:
            array = numpy_helper.to_array(inits[name])
        if array is None or array.ndim not in (2, 3):
            continue
        lifted = array.reshape(*array.shape[:-1], 1, array.shape[-1])
        if name in aside:
            aside[name] = lifted
        else:
            _replace(inits[name], lifted)
    if exits:  # each right after the node writing the signal it reads
        nodes = list(graph.node)
        del graph.node[:]
        for node in nodes:
            graph.node.append(node)
            graph.node.extend(exits[o] for o in node.output if o in exits)
        graph.node.extend(exits[name] for name in sorted(exits) if name not in producer)
    _keep_output_ranks(graph, runtime)
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name in runtime:
            dims.insert(2, onnx.TensorShapeProto.Dimension(dim_value=1))
        elif value.name in weights and len(dims) in (2, 3):  # a weight set aside
            dims.insert(len(dims) - 1, onnx.TensorShapeProto.Dimension(dim_value=1))
    del graph.value_info[:]
    return True


def _covers(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """Whether the rewrite to rows covers `node` (its rank-3 tensors are all signals)."""
    if node.op_type in ("Squeeze", "Unsqueeze"):
        return _axes(node, inits) in ([2], [-2])
    return node.op_type in WINDOWED or node.op_type in SAME or node.op_type in (
        "Concat", "Split", "Transpose", "Pad", "Slice", "Reshape", "ReduceMean",
        "ReduceSum")


def _signals(graph: onnx.GraphProto, rank3: set[str], inits: dict[str, onnx.TensorProto]
             ) -> set[str]:
    """The rank-3 runtime tensors that are 1-D signals: the inputs of 1-D convolutions and
    pools, and every rank-3 tensor of a covered node that touches one. Other rank-3
    tensors (the sequences a recurrent layer reads, after a Conv1d front end's last
    transpose) keep their rank."""
    found = {node.input[0] for node in graph.node
             if node.op_type in WINDOWED and node.input and node.input[0] in rank3}
    grew = bool(found)
    while grew:
        grew = False
        for node in graph.node:
            names = [n for n in [*node.input, *node.output] if n in rank3]
            if _covers(node, inits) and any(n in found for n in names) and \
                    not all(n in found for n in names):
                found.update(names)
                grew = True
    return found


def _unlift_inputs(graph: onnx.GraphProto, node: onnx.NodeProto, runtime: set[str],
                   inits: dict[str, onnx.TensorProto], exits: dict[str, onnx.NodeProto]
                   ) -> None:
    """Each signal `node` reads, [A, B, 1, C] once lifted, given back as [A, B, C] (the
    same elements in the same order) by a Reshape in front of it (one per signal, in
    `exits`)."""
    for k, name in enumerate(node.input):
        if name not in runtime:
            continue
        back = f"{name}/as_sequence"
        if name not in exits:
            shape = f"{back}/shape"
            inits[shape] = numpy_helper.from_array(np.array([0, 0, -1], np.int64), shape)
            graph.initializer.append(inits[shape])
            exits[name] = onnx.helper.make_node("Reshape", [name, shape], [back], name=back)
        node.input[k] = back


def _keep_output_ranks(graph: onnx.GraphProto, runtime: set[str]) -> None:
    """A rank-3 output keeps its shape: the lifted [N, C, 1, L] tensor is computed under a
    name of its own and a Reshape (the host's float tail, or the reference) gives back
    [N, C, L], the same elements in the same order."""
    for value in graph.output:
        if value.name not in runtime:
            continue
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        rows = f"{value.name}/rows"
        shape = f"{value.name}/shape"
        for node in graph.node:
            node.output[:] = [rows if o == value.name else o for o in node.output]
            node.input[:] = [rows if i == value.name else i for i in node.input]
        graph.initializer.append(numpy_helper.from_array(np.array(dims, np.int64), shape))
        graph.node.append(onnx.helper.make_node("Reshape", [rows, shape], [value.name],
                                                name=f"{value.name}/as_signal"))
        runtime.discard(value.name)


def _axes(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> list[int] | None:
    """The axes of a Squeeze or Unsqueeze: its attribute, or its constant second input."""
    for attr in node.attribute:
        if attr.name == "axes":
            return list(attr.ints)
    if len(node.input) > 1 and node.input[1] in inits:
        return [int(a) for a in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
    return None


def _replace(init: onnx.TensorProto, array: np.ndarray) -> None:
    init.CopyFrom(numpy_helper.from_array(array.astype(numpy_helper.to_array(init).dtype),
                                          init.name))


def _lift_attributes(node: onnx.NodeProto) -> None:
    """A 1-D window's kernel, strides, dilations and pads as a 2-D window of one row."""
    for attr in node.attribute:
        if attr.name in ("kernel_shape", "strides", "dilations") and len(attr.ints) == 1:
            attr.ints[:] = [1, attr.ints[0]]
        elif attr.name == "pads" and len(attr.ints) == 2:
            attr.ints[:] = [0, attr.ints[0], 0, attr.ints[1]]


def _lifted(axis: int) -> int:
    """Axis `axis` of [N, C, L] in [N, C, 1, L]."""
    axis %= 3
    return axis if axis < 2 else 3


def _lift_axis(node: onnx.NodeProto, name: str) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = _lifted(attr.i)


def _lift_layout_inputs(graph: onnx.GraphProto, node: onnx.NodeProto,
                        inits: dict[str, onnx.TensorProto], path: str) -> None:
    """A Pad or Slice of [N, C, L] as one of [N, C, 1, L]: its `axes` mapped (each node
    gets its own copy, others may share the constant), or without axes, Pad's pads
    gain a zero before and after for the unit axis and Slice's axes are [0, 1, 3]."""
    def constant(index: int) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        if node.input[index] not in inits:
            raise _refuse(path, node, f"has a computed input {index} (its pads, starts, ends "
                                      "or axes must be constants)")
        return numpy_helper.to_array(inits[node.input[index]])

    def replace_input(index: int, values: np.ndarray) -> None:
        name = f"{node.name or node.output[0]}/rows{index}"
        inits[name] = numpy_helper.from_array(values.astype(np.int64), name)
        graph.initializer.append(inits[name])
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name

    axes = constant(3)  # Pad's and Slice's axes are both input 3
    if axes is not None:
        replace_input(3, np.array([_lifted(int(a)) for a in axes.reshape(-1)]))
    elif node.op_type == "Pad":
        pads = constant(1)
        if pads is not None:
            replace_input(1, np.insert(np.insert(pads.reshape(-1), 5, 0), 2, 0))
    else:
        starts = constant(1)
        count = 3 if starts is None else len(starts.reshape(-1))
        replace_input(3, np.array([_lifted(a) for a in range(count)]))


def _lift_reduce_axes(graph: onnx.GraphProto, node: onnx.NodeProto,
                      inits: dict[str, onnx.TensorProto], path: str) -> None:
    """A ReduceMean's or ReduceSum's axes of [N, C, L] as axes of [N, C, 1, L]: its
    attribute (older opsets) or its constant input 1 (each node gets its own copy). Without
    keepdims the unit axis is reduced too (the rank drops as it did); no axes reduces
    every axis, the unit one too."""
    drop = not next((a.i for a in node.attribute if a.name == "keepdims"), 1)

    def lifted(axes: list[int]) -> list[int]:
        return sorted({_lifted(a) for a in axes} | ({2} if drop else set()))

    for attr in node.attribute:
        if attr.name == "axes":
            attr.ints[:] = lifted(list(attr.ints))
            return
    if len(node.input) < 2 or not node.input[1]:
        return
    source = inits.get(node.input[1])
    if source is None:  # a Constant node's value (the version converter writes those)
        maker = next((n for n in graph.node if node.input[1] in n.output
                      and n.op_type == "Constant"), None)
        source = next((a.t for a in maker.attribute if a.name == "value"), None) \
            if maker is not None else None
    if source is None:
        raise _refuse(path, node, "has computed axes (they must be a constant)")
    name = f"{node.name or node.output[0]}/rows_axes"
    axes = [int(a) for a in numpy_helper.to_array(source).reshape(-1)]
    inits[name] = numpy_helper.from_array(np.array(lifted(axes), np.int64), name)
    graph.initializer.append(inits[name])
    node.input[1] = name


def _refuse(path: str, node: onnx.NodeProto, why: str) -> CimcError:
    return CimcError(f"{path}: node {node.name or node.output[0]!r} ({node.op_type}) reads a "
                     f"1-D signal [N, C, L], which cimc runs as an image of one row, but it "
                     f"{why}; export the model with 2-D ops on [N, C, 1, L]")
