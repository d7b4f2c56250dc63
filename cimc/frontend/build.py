"""Building the IR from a checked, shape-inferred, constant-folded ONNX model.

ONNX tensors become IR values of the same name, initializers and Constant
nodes become IR constants (added when an op first reads them, so constants
read only as attributes -- shapes, axes, scales -- never appear), and each
node is handed to its converter in the conversion table. Quantization
parameters are gathered before any op is built, because an IR value's type
carries its Quant from the moment it exists. The table (cimc/frontend/ops.py,
cimc/frontend/quant.py) and the gathering of quantization parameters
(quant.py) build on this module's NodeImport, so the importer hands them to
`ModuleBuilder.build`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cimc.diagnostics import CimcError
from cimc.ir.module import DTYPES, NUMPY_TO_DTYPE, Module, Quant, TensorType

ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "f32",
    onnx.TensorProto.INT8: "i8",
    onnx.TensorProto.UINT8: "u8",
    onnx.TensorProto.INT16: "i16",
    onnx.TensorProto.UINT16: "u16",
    onnx.TensorProto.INT32: "i32",
    onnx.TensorProto.UINT32: "u32",
    onnx.TensorProto.INT64: "i64",
    onnx.TensorProto.UINT64: "u64",
    onnx.TensorProto.BOOL: "bool",
}

SUPPORTED_TYPES = ", ".join(DTYPES[t].name for t in ONNX_DTYPES.values())

# What to do about operators that are common in the wild but not supported.
HINTS: dict[str, str] = {
    "DynamicQuantizeLinear": "dynamic quantization is not supported; quantize the model "
    "statically (onnxruntime.quantization.quantize_static) or give cimc the float model",
    "com.microsoft": "onnxruntime's QOperator format uses com.microsoft operators; quantize "
    "with quant_format=QuantFormat.QDQ instead",
    "Shape": "shape computations must fold to constants; pin the input shapes with "
    "--input-shape or export the model with static shapes",
}


@dataclass
class NodeImport:
    """One ONNX node being converted: its operands, attributes and the builder."""

    node: onnx.NodeProto
    name: str
    attrs: dict[str, Any]
    builder: ModuleBuilder

    @property
    def op_type(self) -> str:
        return self.node.op_type

    def has_input(self, index: int) -> bool:
        return index < len(self.node.input) and self.node.input[index] != ""

    def input(self, index: int) -> str:
        return self.node.input[index]

    def operand(self, index: int) -> str:
        """The IR value for input `index` (constants are added on first use)."""
        return self.builder.value(self.node.input[index])

    def type(self, index: int) -> TensorType:
        """The type of input `index`."""
        return self.builder.type_of(self.node.input[index], self)

    def result_type(self, index: int = 0) -> TensorType:
        return self.builder.type_of(self.node.output[index], self)

    def constant(self, index: int, what: str) -> np.ndarray[Any, Any]:
        """The data of input `index`, which must be a constant."""
        data = self.builder.constants.get(self.node.input[index]) if self.has_input(index) else None
        if data is None:
            raise self.error(
                f"its {what} (input {index}) must be a constant, but it is computed at run time; "
                "pin the input shapes with --input-shape or export the model with constant "
                f"{what}"
            )
        return data

    def emit(
        self,
        kind: str,
        operands: list[str],
        attrs: dict[str, Any] | None = None,
        *,
        result: str | None = None,
        result_type: TensorType | None = None,
        name: str | None = None,
    ) -> str:
        """Add one IR op; by default it is named after the node and defines its first output."""
        result = result or self.node.output[0]
        ty = result_type or self.builder.type_of(result, self)
        op = self.builder.module.add_op(
            kind, operands, [ty], name=name or self.name, outputs=[result], attrs=attrs
        )
        return op.outputs[0]

    def fresh(self, suffix: str) -> str:
        """A new op or value name derived from this node's name."""
        return self.builder.fresh(f"{self.name}_{suffix}")

    def error(self, message: str) -> CimcError:
        return CimcError(f"{self.builder.path}: node {self.name!r} ({self.op_type}): {message}")


Converter = Callable[[NodeImport], None]
# Operators supported in some forms only: op type -> why a node's attributes (defaults
# left out) are not one of them, or None. Such nodes are listed with the unsupported
# operators, so that one message names every node cimc cannot import.
UNSUPPORTED_FORMS: dict[str, Callable[[dict[str, Any]], str | None]] = {}


# Nodes whose result size is (input + pads - dilated kernel) / stride + 1 per spatial axis.
WINDOW_OPS = ("Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool")


def _negative_size_reason(ctx: NodeImport | None) -> str:
    """Why shape inference found a negative size for a result of `ctx`, and what to do."""
    generic = ("the node's attributes do not fit the shapes of its operands; fix the "
               "attributes in the model")
    if ctx is None or ctx.op_type not in WINDOW_OPS:
        return generic
    weights = ctx.builder.constants.get(ctx.input(1)) if ctx.op_type == "Conv" else None
    kernel = list(ctx.attrs.get("kernel_shape") or
                  ([] if weights is None else list(weights.shape[2:])))
    info = ctx.builder.value_info.get(ctx.input(0))
    image = [] if info is None else [d.dim_value for d in info.type.tensor_type.shape.dim[2:]]
    if not kernel or len(image) != len(kernel):
        return generic
    pads = list(ctx.attrs.get("pads") or [0] * 2 * len(kernel))
    dilations = list(ctx.attrs.get("dilations") or [1] * len(kernel))
    padded = [size + pads[i] + pads[i + len(kernel)] for i, size in enumerate(image)]
    reach = [dilations[i] * (k - 1) + 1 for i, k in enumerate(kernel)]
    return (f"the kernel {'x'.join(map(str, kernel))} (dilations {dilations}, reaching "
            f"{'x'.join(map(str, reach))}) exceeds the input {'x'.join(map(str, image))} padded "
            f"to {'x'.join(map(str, padded))}; make kernel_shape smaller or the pads larger")


class ModuleBuilder:
    """Turns the nodes of one ONNX graph into the ops of one Module."""

    def __init__(
        self, model: onnx.ModelProto, path: str, name: str,
        weights: dict[str, np.ndarray[Any, Any]] | None = None,
    ) -> None:
        self.path = path
        self.graph = model.graph
        self.module = Module(name)
        self.constants: dict[str, np.ndarray[Any, Any]] = {
            init.name: numpy_helper.to_array(init) for init in self.graph.initializer
        }
        self.constants.update(weights or {})
        self.value_info: dict[str, onnx.ValueInfoProto] = {}
        for info in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            self.value_info.setdefault(info.name, info)
        self.quants: dict[str, Quant] = {}
        self._taken: set[str] = set(self.constants) | set(self.value_info)
        for node in self.graph.node:
            self._taken.update(node.output)

    def build(self, table: Mapping[str, Converter],
              record_quants: Callable[[list[NodeImport]], dict[str, Quant]]) -> Module:
        """The module: each node converted by `table[op_type]`, after `record_quants`
        found the quantization of every integer tensor."""
        nodes = []
        for node in self.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.constants[node.output[0]] = _constant_node_value(node)
            else:
                nodes.append(node)
        names = [self.fresh(node.name or node.op_type) for node in nodes]
        self._check_supported(nodes, names, table)
        imports = [
            NodeImport(node, name, _attributes(node), self)
            for node, name in zip(nodes, names, strict=True)
        ]
        self.quants = record_quants(imports)
        for info in self.graph.input:
            if info.name not in self.constants:
                self.module.add_input(info.name, self.type_of(info.name))
        used = {v for n in nodes for v in n.input} | {o.name for o in self.graph.output}
        for ctx in imports:
            table[ctx.op_type](ctx)
            for index, out in enumerate(ctx.node.output):
                if out and out in used and out not in self.module.values:
                    raise ctx.error(
                        f"its output {index} ({out!r}) is used, but cimc imports only "
                        f"the main result of {ctx.op_type}"
                    )
        self.module.outputs = [self.value(out.name) for out in self.graph.output]
        return self.module

    def value(self, name: str) -> str:
        """The IR value `name`, adding it as a constant if it is one."""
        if name not in self.module.values:
            data = self.constants.get(name)
            if data is None:
                raise CimcError(f"{self.path}: tensor {name!r} is used but never defined")
            if data.dtype == np.float64:
                data = data.astype(np.float32)
            _numpy_dtype(data, name, self.path)
            self.module.add_constant(name, data, self.quants.get(name))
        return name

    def type_of(self, name: str, ctx: NodeImport | None = None) -> TensorType:
        """The static type of tensor `name` as shape inference found it."""
        quant = self.quants.get(name)
        if name in self.constants:
            data = self.constants[name]
            dtype = "f32" if data.dtype == np.float64 else _numpy_dtype(data, name, self.path)
            return TensorType(tuple(int(d) for d in data.shape), dtype, quant)
        where = ctx.error if ctx is not None else self._error
        info = self.value_info.get(name)
        tensor_type = info.type.tensor_type if info is not None else None
        if tensor_type is None or not tensor_type.HasField("shape"):
            raise where(
                f"the shape of {name!r} is not known statically; pin the input shapes "
                "with --input-shape or export the model with static shapes"
            )
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if any(d.HasField("dim_value") and d.dim_value < 0 for d in tensor_type.shape.dim):
            # Shape inference computed a size below zero: the node, not the inputs, is wrong.
            shown = ",".join(str(d.dim_value) if d.HasField("dim_value") else "?"
                             for d in tensor_type.shape.dim)
            raise where(f"the shape of {name!r} comes out as [{shown}]: "
                        f"{_negative_size_reason(ctx)}")
        if any(d < 0 for d in dims):
            shown = ",".join("?" if d < 0 else str(d) for d in dims)
            raise where(
                f"the shape of {name!r} is [{shown}], not fully static; pin the input shapes "
                "with --input-shape or export the model with static shapes"
            )
        elem_dtype = ONNX_DTYPES.get(tensor_type.elem_type)
        if elem_dtype is None:
            type_name = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
            raise where(
                f"{name!r} has element type {type_name}, which cimc does not support "
                f"({SUPPORTED_TYPES}); convert the model to float32"
            )
        return TensorType(tuple(dims), elem_dtype, quant)

    def fresh(self, base: str) -> str:
        """A name unused by any ONNX tensor, IR value or IR op."""
        name, i = base, 0
        while name in self._taken or name in self.module.values or name in self.module.graph:
            i += 1
            name = f"{base}_{i}"
        self._taken.add(name)
        return name

    def _check_supported(
        self, nodes: list[onnx.NodeProto], names: list[str], table: Mapping[str, Converter]
    ) -> None:
        reasons: dict[str, str] = {}
        for name, node in zip(names, nodes, strict=True):
            check = UNSUPPORTED_FORMS.get(node.op_type)
            reason = check(_attributes(node)) if check is not None else None
            if reason is not None and node.domain in ("", "ai.onnx"):
                reasons[name] = reason
        missing = [
            (name, node)
            for name, node in zip(names, nodes, strict=True)
            if node.domain not in ("", "ai.onnx") or node.op_type not in table
            or name in reasons
        ]
        if not missing:
            return
        lines = []
        for name, node in missing:
            domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
            why = f" ({reasons[name]})" if name in reasons else ""
            lines.append(f"  node {name!r}: {domain}{node.op_type}{why}")
        hints = sorted({HINTS[n.op_type] for _, n in missing if n.op_type in HINTS}
                       | {HINTS[n.domain] for _, n in missing if n.domain in HINTS})
        raise CimcError(
            f"{self.path}: {len(missing)} node(s) use operators cimc does not support:\n"
            + "\n".join(lines)
            + "\n"
            + "".join(f"hint: {h}\n" for h in hints)
            + "rewrite the model without them (supported operators: "
            + ", ".join(sorted(table))
            + ")"
        )

    def _error(self, message: str) -> CimcError:
        return CimcError(f"{self.path}: {message}")


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, float):
            value = _shortest(value)
        elif isinstance(value, list) and value and isinstance(value[0], float):
            value = [_shortest(v) for v in value]
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        attrs[attr.name] = value
    return attrs


def _shortest(value: float) -> float:
    """A float32 attribute as the shortest decimal naming it (0.001, not 0.0010000000474974513)."""
    return float(str(np.float32(value)))


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray[Any, Any]:
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    dtypes = {"value_float": np.float32, "value_floats": np.float32,
              "value_int": np.int64, "value_ints": np.int64}
    if attr.name not in dtypes:
        raise CimcError(f"Constant node {node.name!r}: unsupported attribute {attr.name!r}")
    return np.asarray(value, dtype=dtypes[attr.name])


def _numpy_dtype(data: np.ndarray[Any, Any], name: str, path: str) -> str:
    dtype = NUMPY_TO_DTYPE.get(data.dtype)
    if dtype is None:
        raise CimcError(
            f"{path}: constant {name!r} has element type {data.dtype}, which cimc does not "
            f"support ({SUPPORTED_TYPES})"
        )
    return dtype
