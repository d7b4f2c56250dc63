"""The tensor IR: ops over typed tensors in a networkx graph.

A Module holds
  - `values`: every tensor by name with its TensorType (graph inputs, constants
    and op results alike);
  - `constants`: the data of constant tensors (weights, biases), numpy arrays
    whose dtype matches their TensorType;
  - `graph`: a networkx MultiDiGraph whose nodes are op names (node attribute
    "op" holds the Op) and whose edges run producer -> consumer, keyed by the
    value that flows along them;
  - `inputs` / `outputs`: the names of the module's runtime inputs and results;
  - analyses: results derived from the IR that are costly to compute (the backend's
    plan and code), kept by type with `keep_analysis` and read with `analysis`. They
    are never printed (what prints determines them) and the pass manager forgets
    them before every pass, since a pass may change what they were derived from.

Ops are mutated only through Module methods so that the graph edges always
match the ops' operand lists. Iteration order is deterministic: ops come out
in a topological order that breaks ties by insertion order, never by hash.

The op kinds and their semantics are listed in docs/ir.md.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import networkx as nx
import numpy as np

AnalysisT = TypeVar("AnalysisT")

# IR element types and their numpy counterparts.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i16": np.dtype(np.int16),
    "u16": np.dtype(np.uint16),
    "i32": np.dtype(np.int32),
    "u32": np.dtype(np.uint32),
    "i64": np.dtype(np.int64),
    "u64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
}
NUMPY_TO_DTYPE: dict[np.dtype, str] = {v: k for k, v in DTYPES.items()}

# Attribute values: numbers, strings and flat lists of numbers.
Attr = int | float | str | bool | list[int] | list[float]


@dataclass(frozen=True)
class Quant:
    """Affine quantization: real = scale * (q - zero_point).

    `axis` is None for per-tensor parameters (one scale and one zero point),
    otherwise the dimension whose channels each have their own scale and zero
    point (per-channel weights use axis 0 of the weight tensor).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self) -> None:
        if len(self.scale) != len(self.zero_point):
            raise ValueError("quantization scale and zero point differ in length")
        if self.axis is None and len(self.scale) != 1:
            raise ValueError("per-tensor quantization has exactly one scale")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def scale_array(self) -> np.ndarray:
        return np.asarray(self.scale, dtype=np.float32)

    def zero_point_array(self) -> np.ndarray:
        return np.asarray(self.zero_point, dtype=np.int32)


@dataclass(frozen=True)
class TensorType:
    """Static shape, element type and (for integer tensors) quantization."""

    shape: tuple[int, ...]
    dtype: str
    quant: Quant | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown element type {self.dtype!r}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def numpy_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def is_quantized(self) -> bool:
        return self.quant is not None

    def with_shape(self, shape: Iterable[int]) -> TensorType:
        return replace(self, shape=tuple(int(d) for d in shape))


@dataclass
class Op:
    """One operation: `outputs = kind(inputs) {attrs}`.

    `name` is unique in its module and traces back to the ONNX node it came
    from, so errors can name the node.
    """

    name: str
    kind: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


class Module:
    """A whole network in the tensor IR."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.graph: nx.MultiDiGraph = nx.MultiDiGraph()
        self.values: dict[str, TensorType] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._producer: dict[str, str] = {}
        self._readers: dict[str, dict[str, None]] = {}  # value -> reading ops (ordered set)
        self._order = itertools.count()
        self._analyses: dict[type, object] = {}

    # ---- analyses -----------------------------------------------------
    def analysis(self, kind: type[AnalysisT]) -> AnalysisT | None:
        """The kept analysis of type `kind`, if one is kept and not forgotten."""
        found = self._analyses.get(kind)
        return found if isinstance(found, kind) else None

    def keep_analysis(self, result: object) -> None:
        """Keep `result` (one per type) until the IR next changes through a pass."""
        self._analyses[type(result)] = result

    def forget_analyses(self) -> None:
        self._analyses.clear()

    # ---- values -------------------------------------------------------
    def add_input(self, name: str, type_: TensorType) -> str:
        self._check_new_value(name)
        self.values[name] = type_
        self.inputs.append(name)
        return name

    def add_constant(self, name: str, data: np.ndarray, quant: Quant | None = None) -> str:
        """Add a constant tensor; its type comes from the array."""
        self._check_new_value(name)
        data = np.require(np.asarray(data), requirements="C")  # keeps 0-d scalars 0-d
        if data.dtype not in NUMPY_TO_DTYPE:
            raise ValueError(f"constant {name!r} has unsupported dtype {data.dtype}")
        self.values[name] = TensorType(tuple(data.shape), NUMPY_TO_DTYPE[data.dtype], quant)
        self.constants[name] = data
        return name

    def copy_sharing_constants(self) -> Module:
        """A deep copy of the module whose constants are the same arrays, made read-only
        in both: the weights are held once, and a write into a shared array fails."""
        for data in self.constants.values():
            data.flags.writeable = False
        return copy.deepcopy(self, {id(data): data for data in self.constants.values()})

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def fresh_name(self, base: str) -> str:
        """A value or op name not yet used in this module, derived from `base`."""
        if base not in self.values and base not in self.graph:
            return base
        for i in itertools.count(1):
            candidate = f"{base}_{i}"
            if candidate not in self.values and candidate not in self.graph:
                return candidate
        raise AssertionError("unreachable")

    def _check_new_value(self, name: str) -> None:
        if name in self.values:
            raise ValueError(f"value {name!r} is defined twice")

    # ---- ops ----------------------------------------------------------
    def add_op(
        self,
        kind: str,
        inputs: list[str],
        output_types: list[TensorType],
        *,
        name: str | None = None,
        outputs: list[str] | None = None,
        attrs: dict[str, Any] | None = None,
        exact_name: bool = False,
    ) -> Op:
        """Create an op producing new values of the given types; return it.

        The op is named `name` (made unique unless `exact_name`, which the text
        parser uses to keep names as written).
        """
        if exact_name and name is not None:
            if name in self.graph:
                raise ValueError(f"op {name!r} is defined twice")
        else:
            name = self.fresh_name(name or kind)
        if outputs is None:
            outputs = [
                self.fresh_name(f"{name}_out{i}" if i else name) for i in range(len(output_types))
            ]
        if len(outputs) != len(output_types):
            raise ValueError("one type is needed per output")
        op = Op(name, kind, list(inputs), list(outputs), dict(attrs or {}))
        for out, ty in zip(outputs, output_types, strict=True):
            self._check_new_value(out)
            self.values[out] = ty
            self._producer[out] = name
        self.graph.add_node(name, op=op, order=next(self._order))
        self._connect(op)
        return op

    def _connect(self, op: Op) -> None:
        self._link_inputs(op)
        # Ops may be added before their producers (the text parser does so).
        for value in op.outputs:
            for reader in self._readers.get(value, {}):
                if not self.graph.has_edge(op.name, reader, key=value):
                    self.graph.add_edge(op.name, reader, key=value)

    def _link_inputs(self, op: Op) -> None:
        for value in op.inputs:
            self._readers.setdefault(value, {})[op.name] = None
            src = self._producer.get(value)
            if src is not None and not self.graph.has_edge(src, op.name, key=value):
                self.graph.add_edge(src, op.name, key=value)

    def _disconnect_inputs(self, op: Op) -> None:
        for src, dst, key in list(self.graph.in_edges(op.name, keys=True)):
            self.graph.remove_edge(src, dst, key=key)
        for value in op.inputs:
            self._readers.get(value, {}).pop(op.name, None)

    def op(self, name: str) -> Op:
        return self.graph.nodes[name]["op"]

    def ops(self) -> Iterator[Op]:
        """All ops in a deterministic topological order."""
        order = nx.get_node_attributes(self.graph, "order")
        for name in nx.lexicographical_topological_sort(self.graph, key=lambda n: order[n]):
            yield self.graph.nodes[name]["op"]

    def producer(self, value: str) -> Op | None:
        """The op defining `value`, or None for inputs and constants."""
        name = self._producer.get(value)
        return None if name is None else self.op(name)

    def consumers(self, value: str) -> list[Op]:
        """Ops reading `value`, in deterministic order."""
        found = [self.op(n) for n in self._readers.get(value, {})]
        return sorted(found, key=lambda op: self.graph.nodes[op.name]["order"])

    def set_inputs(self, op: Op, inputs: list[str]) -> None:
        """Replace the operand list of `op`, keeping graph edges in step."""
        self._disconnect_inputs(op)
        op.inputs = list(inputs)
        self._link_inputs(op)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of `old` (ops and module outputs) read `new` instead."""
        for op in self.consumers(old):
            self.set_inputs(op, [new if v == old else v for v in op.inputs])
        self.outputs = [new if v == old else v for v in self.outputs]

    def rename_value(self, old: str, new: str) -> None:
        """Give value `old` the unused name `new`, for its producer, readers and the
        module's inputs and outputs alike."""
        self._check_new_value(new)
        self.values[new] = self.values.pop(old)
        if old in self.constants:
            self.constants[new] = self.constants.pop(old)
        producer = self._producer.pop(old, None)
        if producer is not None:
            self._producer[new] = producer
            op = self.op(producer)
            op.outputs = [new if v == old else v for v in op.outputs]
        readers = self._readers.pop(old, {})
        self._readers[new] = readers
        for reader in readers:
            op = self.op(reader)
            op.inputs = [new if v == old else v for v in op.inputs]
        for src, dst in [(s, d) for s, d, k in self.graph.edges(keys=True) if k == old]:
            self.graph.remove_edge(src, dst, key=old)
            self.graph.add_edge(src, dst, key=new)
        self.inputs = [new if v == old else v for v in self.inputs]
        self.outputs = [new if v == old else v for v in self.outputs]

    def remove_op(self, op: Op) -> None:
        """Delete `op` and its result values; they must have no readers left."""
        for out in op.outputs:
            if self.consumers(out) or out in self.outputs:
                raise ValueError(f"cannot remove {op.name!r}: {out!r} is still used")
        self._disconnect_inputs(op)
        self.graph.remove_node(op.name)
        for out in op.outputs:
            del self.values[out]
            del self._producer[out]

    def remove_dead(self) -> None:
        """Drop ops whose results nobody reads, and constants nobody reads."""
        changed = True
        while changed:
            changed = False
            for op in reversed(list(self.ops())):
                if all(not self.consumers(o) and o not in self.outputs for o in op.outputs):
                    self.remove_op(op)
                    changed = True
        used = {v for op in self.ops() for v in op.inputs} | set(self.outputs)
        for name in [c for c in self.constants if c not in used]:
            del self.constants[name]
            del self.values[name]

    def restricted(self, ops: list[Op], stand_ins: list[Op], name: str) -> Module:
        """A module of `ops` (the same Op objects: attributes written through either
        module show in both), sharing this module's values and constants. `stand_ins`
        (ops of no operands, not part of this module) produce the values `ops` read
        that none of them produces; its outputs are the values `ops` produce that other
        ops of this module or its outputs read."""
        sub = Module(name)
        sub.values, sub.constants = self.values, self.constants
        members = {op.name for op in ops}
        for op in [*stand_ins, *ops]:
            order = -1 if op.name not in members else self.graph.nodes[op.name]["order"]
            sub.graph.add_node(op.name, op=op, order=order)
            for value in op.outputs:
                sub._producer[value] = op.name
        for op in [*stand_ins, *ops]:
            sub._connect(op)
        sub.outputs = [v for op in ops for v in op.outputs
                       if v in self.outputs
                       or any(reader not in members for reader in self._readers.get(v, {}))]
        return sub

    def __repr__(self) -> str:
        return f"<Module {self.name}: {self.graph.number_of_nodes()} ops>"
