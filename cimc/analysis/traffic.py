"""The dataflow's traffic model: placement units and the bytes that flow between them.

One model, used by the placer (to minimise it) and by the schedule (which emits
exactly these messages); docs/backend.md "Dataflow" describes it.

*Units* are what `place` assigns to cores: every crossbar block of every
replica of a `matvec` (named `"<op>#<replica>.<i>.<j>"`) and every vector op
(`pool`, `eltwise`, `rescale`, `scale`, `product`, `dot`, `pixel_softmax`,
`pixel_layernorm`, `join`, `gather`, named after the op). A matvec with
`replicas = R` splits its output rows round-robin: replica r computes rows
r, r + R, ... . The *reducer* of column block j of a replica is the unit of
that column's first block (lowest row block present in `blocks`).

*Edges* per inference (bytes):
  * `psum`: every non-first block (i, j) of a replica sends its i32 partial
    sums (`pixels * cols_j * 4`) to the reducer of column j;
  * `activation`: the reducer of column j of a producer replica (or a vector
    op) sends the output rows it computes, channels of column j only
    (`width * cols_j` bytes a row), to every unit of a consumer that needs
    those rows and channels: each block of a matvec replica whose weight rows
    touch those channels (rows as that replica's band receives them,
    `backend_window.received_rows`), or the unit of a vector op;
  * `input` / `output`: model inputs loaded from global memory (`ld`, source
    `"global"`), model outputs stored to it (`st`, destination `"global"`).

Edges carry a `payload`: one piece of data that may go to several units.
On cores, a payload travels once per (source core, destination core) pair:
blocks of one column on one core add their partial sums before sending, and a
core receives an activation row once for all its blocks. `hop_bytes` and
`link_loads` count that way; edges within a core cost nothing.

Placement attributes (set by `place`, read by `unit_cores`): on a matvec,
`block_cores` lists one core per block unit, replica-major (replica 0's
blocks in `blocks` order, then replica 1's...); on a vector op, `core`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from cimc.analysis.gather import geometry
from cimc.analysis.window import Window, received_rows
from cimc.diagnostics import CimcError
from cimc.dialect.chip import block_shape, blocks_of, image_dims, runtime_operands
from cimc.ir.module import Module, Op
from cimc.targets import Target

VECTOR_KINDS = ("pool", "eltwise", "rescale", "scale", "product", "dot", "pixel_softmax",
                "pixel_layernorm", "join", "gather")
GLOBAL = "global"


@dataclass(frozen=True)
class Unit:
    """What `place` puts on one core."""

    name: str
    op: str
    kind: str  # "block" (a crossbar block of a matvec replica) or "vector"
    replica: int = 0
    i: int = -1  # row block
    j: int = -1  # column block
    weight_rows: int = 0
    weight_cols: int = 0
    slices: int = 0
    windows: int = 0  # MVMs per inference (block) or output pixels (vector op)

    @property
    def crossbar_columns_needed(self) -> int:
        """Cell columns the block occupies (its weight columns times the slices)."""
        return self.weight_cols * self.slices


@dataclass(frozen=True)
class TrafficEdge:
    src: str  # unit name or GLOBAL
    dst: str
    bytes: int
    kind: str  # "psum", "activation", "input", "output"
    payload: Hashable  # same payload to one core travels once


def replicas(op: Op) -> int:
    return int(op.attrs.get("replicas", 1))


def replica_rows(oh: int, count: int, replica: int) -> list[int]:
    """Output rows computed by `replica` of `count` (round-robin)."""
    return list(range(replica, oh, count))


def block_name(op: Op, replica: int, i: int, j: int) -> str:
    return f"{op.name}#{replica}.{i}.{j}"


def reducer_block(op: Op, j: int) -> int:
    """Row block index of the first block of column j (the reducer's)."""
    return min(i for i, jj in blocks_of(op) if jj == j)


def source_op(module: Module, value: str) -> Op | None:
    """The chip op computing `value` (through views); None for a model input."""
    op = module.producer(value)
    while op is not None and op.kind == "view":
        op = module.producer(op.inputs[0])
    if op is None or op.kind not in ("matvec", *VECTOR_KINDS):
        return None
    return op


def column_ranges(module: Module, op: Op) -> list[tuple[int, int]]:
    """Channel ranges [lo, hi) of the output that one sender holds: column blocks of a
    matvec, the whole tensor for a vector op."""
    n = image_dims(module.values[op.outputs[0]])[2]
    if op.kind != "matvec":
        return [(0, n)]
    width = op.attrs["block_cols"]
    return [(j * width, min(n, (j + 1) * width)) for j in range(-(-n // width))]


def sender_units(module: Module, op: Op) -> list[tuple[str, int, int, list[int]]]:
    """(unit, channel lo, channel hi, output rows) of every unit sending `op`'s output."""
    oh = image_dims(module.values[op.outputs[0]])[0]
    if op.kind != "matvec":
        return [(op.name, 0, image_dims(module.values[op.outputs[0]])[2], list(range(oh)))]
    found = []
    for r in range(replicas(op)):
        for j, (lo, hi) in enumerate(column_ranges(module, op)):
            found.append((block_name(op, r, reducer_block(op, j), j), lo, hi,
                          replica_rows(oh, replicas(op), r)))
    return found


def block_input_channels(module: Module, op: Op, i: int) -> np.ndarray:
    """Input channels that the weight rows of row block i read (window order
    (group, ky, kx, c))."""
    win = Window.of(module, op)
    k = module.values[op.inputs[1]].shape[0]
    rows = np.arange(i * op.attrs["block_rows"], min(k, (i + 1) * op.attrs["block_rows"]))
    cg = win.c // win.groups
    taps = win.kh * win.kw
    return np.unique(rows // (taps * cg) * cg + rows % cg)


def input_rows(module: Module, op: Op, out_rows: list[int], operand: int = 0) -> list[int]:
    """Rows of runtime operand `operand` a unit of `op` computing `out_rows` receives, in
    order."""
    if op.kind == "gather":
        return [iy for rows in geometry(module, op).received(operand, out_rows) for iy in rows]
    if op.kind in ("matvec", "pool"):
        return received_rows(Window.of(module, op), out_rows)
    return [row for rows in operand_rows(module, op, out_rows, operand) for row in rows]


def operand_rows(module: Module, op: Op, out_rows: list[int], operand: int
                 ) -> list[list[int]]:
    """For each output row of a vector op, the rows of runtime operand `operand` it reads:
    the same row, or row 0 of an operand of one row broadcast over all (a `product`'s
    [1,C,1,1] gate)."""
    value = runtime_operands(module, op)[operand]
    if image_dims(module.values[value])[0] == 1:
        return [[0] for _ in out_rows]
    return [[oy] for oy in out_rows]


def units(module: Module, target: Target) -> list[Unit]:
    """Every unit of a tiled, replicated module, in layer order."""
    found = []
    for op in module.ops():
        if op.kind == "matvec":
            oh, ow, _ = image_dims(module.values[op.outputs[0]])
            for r in range(replicas(op)):
                pixels = len(replica_rows(oh, replicas(op), r)) * ow
                for i, j in blocks_of(op):
                    rows, cols = block_shape(module, op, i, j)
                    found.append(Unit(block_name(op, r, i, j), op.name, "block", r, i, j,
                                      rows.stop - rows.start, cols.stop - cols.start,
                                      op.attrs["slices"], pixels))
        elif op.kind in VECTOR_KINDS:
            oh, ow, _ = image_dims(module.values[op.outputs[0]])
            found.append(Unit(op.name, op.name, "vector", windows=oh * ow))
    return found


def _consumers(module: Module, value: str) -> list[Op]:
    """Chip ops reading `value`, through views, in module order."""
    found = []
    for op in module.consumers(value):
        if op.kind == "view":
            found += _consumers(module, op.outputs[0])
        elif op.kind == "matvec" or op.kind in VECTOR_KINDS:
            found.append(op)
    return found


def _receivers(module: Module, op: Op, lo: int, hi: int,
               channels: dict[tuple[str, int], np.ndarray]) -> list[tuple[int, list[str]]]:
    """(replica, units) of consumer `op` that need input channels [lo, hi); `channels`
    keeps each row block's input channels (sorted) for the next sender."""
    if op.kind != "matvec":
        return [(0, [op.name])]
    needing = []
    for i, j in blocks_of(op):
        key = (op.name, i)
        if key not in channels:
            channels[key] = block_input_channels(module, op, i)
        found = channels[key]
        at = int(np.searchsorted(found, lo))  # the first channel >= lo
        if at < len(found) and found[at] < hi:
            needing.append((i, j))
    return [(r, [block_name(op, r, i, j) for i, j in needing]) for r in range(replicas(op))]


def unit_edges(module: Module, target: Target) -> list[TrafficEdge]:
    """The traffic of one inference between units (see the module docstring)."""
    edges: list[TrafficEdge] = []
    channels: dict[tuple[str, int], np.ndarray] = {}
    for op in module.ops():
        if op.kind == "matvec":
            oh, ow, _ = image_dims(module.values[op.outputs[0]])
            ranges = column_ranges(module, op)
            for r in range(replicas(op)):
                pixels = len(replica_rows(oh, replicas(op), r)) * ow
                for i, j in blocks_of(op):
                    first = reducer_block(op, j)
                    if i != first:
                        lo, hi = ranges[j]
                        edges.append(TrafficEdge(block_name(op, r, i, j),
                                                 block_name(op, r, first, j),
                                                 pixels * (hi - lo) * 4, "psum",
                                                 ("psum", op.name, r, j)))
        if op.kind != "matvec" and op.kind not in VECTOR_KINDS:
            continue
        for k, value in enumerate(runtime_operands(module, op)):
            edges += _input_edges(module, op, k, value, channels)
        edges += _output_edges(module, op)
    return edges


def _row_filter(rows: list[int], produced: list[int]) -> int:
    have = set(produced)
    return sum(1 for iy in rows if iy in have)


def _input_edges(module: Module, op: Op, k: int, value: str,
                 channels: dict[tuple[str, int], np.ndarray]) -> list[TrafficEdge]:
    """Edges bringing `value` (runtime operand `k`) to the units of `op`."""
    edges = []
    src = source_op(module, value)
    oh = image_dims(module.values[op.outputs[0]])[0]
    count = replicas(op) if op.kind == "matvec" else 1
    k = runtime_operands(module, op).index(value)
    if src is None:
        h, w, c = image_dims(module.values[value])
        for r, names in _receivers(module, op, 0, c, channels):
            rows = input_rows(module, op, replica_rows(oh, count, r), k)
            for name in names:
                edges.append(TrafficEdge(GLOBAL, name, len(rows) * w * c, "input",
                                         ("input", value, op.name, r)))
        return edges
    w = image_dims(module.values[src.outputs[0]])[1]
    for sender, lo, hi, produced in sender_units(module, src):
        for r, names in _receivers(module, op, lo, hi, channels):
            rows = input_rows(module, op, replica_rows(oh, count, r), k)
            size = _row_filter(rows, produced) * w * (hi - lo)
            for name in names:
                if size:
                    edges.append(TrafficEdge(sender, name, size, "activation",
                                             (sender, op.name, r, value)))
    return edges


def _output_edges(module: Module, op: Op) -> list[TrafficEdge]:
    """Stores of `op`'s rows when its result (or a view of it) is a model output."""
    results = {op.outputs[0]}
    for consumer in module.consumers(op.outputs[0]):
        if consumer.kind == "view":
            results.add(consumer.outputs[0])
    if not any(c.kind == "dequantize" for v in sorted(results) for c in module.consumers(v)):
        return []
    w = image_dims(module.values[op.outputs[0]])[1]
    return [TrafficEdge(sender, GLOBAL, len(rows) * w * (hi - lo), "output",
                        ("output", sender))
            for sender, lo, hi, rows in sender_units(module, op)]


def unit_cores(module: Module) -> dict[str, int]:
    """The core of every unit, from the placement attributes."""
    found: dict[str, int] = {}
    for op in module.ops():
        if op.kind == "matvec":
            cores = op.attrs["block_cores"]
            blocks = blocks_of(op)
            if len(cores) != replicas(op) * len(blocks):
                raise CimcError(f"op {op.name!r}: place gave {len(cores)} block cores for "
                                f"{replicas(op)} replicas of {len(blocks)} blocks")
            for r in range(replicas(op)):
                for k, (i, j) in enumerate(blocks):
                    found[block_name(op, r, i, j)] = int(cores[r * len(blocks) + k])
        elif op.kind in VECTOR_KINDS:
            found[op.name] = int(op.attrs["core"])
    return found


def core_messages(edges: list[TrafficEdge], unit_core: dict[str, int]
                  ) -> dict[tuple[int, int], int]:
    """Bytes per (source core, destination core) on the mesh (payloads once per pair)."""
    seen: set[tuple[int, int, Hashable]] = set()
    flows: dict[tuple[int, int], int] = defaultdict(int)
    for edge in edges:
        if edge.kind not in ("psum", "activation"):
            continue
        a, b = unit_core[edge.src], unit_core[edge.dst]
        if a == b or (a, b, edge.payload) in seen:
            continue
        seen.add((a, b, edge.payload))
        flows[(a, b)] += edge.bytes
    return dict(sorted(flows.items()))


def hop_bytes(edges: list[TrafficEdge], unit_core: dict[str, int], target: Target) -> int:
    """Sum of bytes times mesh hops of every core-to-core message."""
    return sum(size * target.hops(a, b)
               for (a, b), size in core_messages(edges, unit_core).items())


def global_bytes(edges: list[TrafficEdge], unit_core: dict[str, int]) -> int:
    """Bytes loaded from and stored to global memory (a payload once per core)."""
    seen: set[tuple[int, Hashable]] = set()
    total = 0
    for edge in edges:
        if edge.kind in ("input", "output"):
            core = unit_core[edge.dst if edge.kind == "input" else edge.src]
            if (core, edge.payload) not in seen:
                seen.add((core, edge.payload))
                total += edge.bytes
    return total


Link = tuple[tuple[int, int], tuple[int, int]]


def link_loads(edges: list[TrafficEdge], unit_core: dict[str, int], target: Target
               ) -> dict[Link, int]:
    """Bytes over each directed mesh link when every flow follows its XY route."""
    loads: dict[Link, int] = defaultdict(int)
    for (a, b), size in core_messages(edges, unit_core).items():
        (x, y), (dx, dy) = target.tile_of(a), target.tile_of(b)
        while x != dx:
            step = 1 if dx > x else -1
            loads[((x, y), (x + step, y))] += size
            x += step
        while y != dy:
            step = 1 if dy > y else -1
            loads[((x, y), (x, y + step))] += size
            y += step
    return dict(sorted(loads.items()))


def max_link_bytes(edges: list[TrafficEdge], unit_core: dict[str, int], target: Target) -> int:
    return max(link_loads(edges, unit_core, target).values(), default=0)
