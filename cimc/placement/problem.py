"""The placement problem: units with crossbar and table demands, payloads, a mesh.

Built from the traffic model (cimc/analysis/traffic.py): every unit (crossbar block of
a matvec replica, or vector op) gets a core. A *payload* is one piece of data
of one inference: a partial-sum vector gathered from the blocks of a column at
its reducer, or an activation slice broadcast from a sender to the blocks that
read it. It travels once per pair of distinct cores, so its cost is

    bytes * sum of hops(core(center), c) over the distinct cores c of its
    other units,

where the *center* is the reducer (partial sums) or the sender (activations).
`hop_bytes` is the sum over payloads; it equals cimc.analysis.traffic.hop_bytes.

Capacity: a block's slices each take a column range of `width` cell columns
of one crossbar of its core. The placer counts a block's width rounded up to
`cols / 2^k` (128, 64, 32, ... for 128-column crossbars): sizes that divide
each other pack exactly, largest first, so a core whose rounded widths sum to
at most `crossbars_per_core * cols` always has room (see `pack`). A block also
needs local memory for the bias and requant tables of the column it reduces,
and a vector op for its requant table; these must stay under half the core's
local memory, as before (the rest is for buffers).

Compute load: a core runs its MVMs one after another, and the blocks of one
*group* (one replica of a matvec; each vector op is a group too) on one core
fire together once per window. A core's load per inference, in cycles, is the
sum over the distinct groups it holds of the group's load: its windows
(`traffic.Unit.windows`) x the MVM time, or a vector op's vector work. The
pipeline's stage target is the largest load of any group: a core holding one
group only may take that much, but a core *shared* by several groups at most
`load_cap`, SHARED_LOAD of it; a vector op counts as more than `load_cap`, so it
has its core to itself. One group's blocks on one core fill at most the core's
crossbars (`xbars`), so `pack` can give each its own. Groups sharing a core run at the same time in
the pipeline, so a shared core at the stage target is a second bottleneck that
lags the first (ResNet-50 at 224x224 on pimcomp, layer-order fill: 14.99 M
simulated cycles with four 56x56 layers a core, 12.83 M with two). The
replicas of a layer (each near the target after `replicate`) land on
different cores.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from cimc.analysis.gather import geometry
from cimc.analysis.plan import vector_row_work
from cimc.analysis.traffic import GLOBAL, TrafficEdge, Unit, unit_edges, units
from cimc.diagnostics import CimcError
from cimc.dialect.chip import CHUNK, image_dims, rounded_width, weight_key
from cimc.ir.module import Module, Op
from cimc.targets import Target

# Hops the CoreHops row cache holds at most (128 MiB of list slots).
ROW_CACHE_ENTRIES = 1 << 24
# Fewer cached rows than this would be recomputed on almost every move.
ROW_CACHE_MIN = 256
# Local memory per output channel a reducer keeps: i32 bias + (M, shift, zy, lo, hi).
TABLE_BYTES = 24
# The most load of a core shared by several groups, as a fraction of the stage target.
SHARED_LOAD = 0.5


@dataclass(frozen=True)
class Payload:
    """One piece of data between one center unit and its other units."""

    center: int
    others: np.ndarray  # unit indices, distinct, not the center
    bytes: int
    kind: str  # "psum" (others -> center) or "activation" (center -> others)


@dataclass
class Problem:
    """Everything a placer needs, in unit indices (layer order).

    Placers assign units to *locations*, which are the cores (a payload goes
    once to every distinct core, so two cores of one tile cost twice the hops
    of one; cores of one tile are 0 hops apart). The names `tiles`,
    `tile_capacity` ... are kept general so a coarser location could be used.
    """

    names: list[str]
    demand: np.ndarray  # rounded cell columns per unit (0 for vector ops)
    tables: np.ndarray  # local memory bytes of tables per unit
    payloads: list[Payload]
    target: Target
    capacity: int  # cell columns per core
    table_budget: int  # table bytes per core
    columns: np.ndarray  # cell columns per unit, not rounded (for the lower bound)
    incident: list[list[int]] = field(default_factory=list)  # unit -> payload indices
    # unit -> group (matvec replica) index, -1 for none; windows per inference of a group
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    group_load: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    load_cap: int = 0  # most load of a core holding several groups (0: unconstrained)
    # unit -> what its tables hold: units of one key on one core share one copy (the
    # code generator places equal tables once); empty: every unit its own.
    table_keys: list[Hashable] = field(default_factory=list)
    # unit -> what its crossbar cells hold: blocks of one key on one core are programmed
    # once and read by each (an unrolled recurrent layer's copies of R); empty: each its own.
    weight_keys: list[Hashable] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.groups) != len(self.names):
            self.groups = np.full(len(self.names), -1, dtype=np.int64)
        if len(self.table_keys) != len(self.names):
            self.table_keys = list(range(len(self.names)))
        if len(self.weight_keys) != len(self.names):
            self.weight_keys = list(range(len(self.names)))
        # Whether any key repeats (else the per-core sums need no deduplication).
        self.shared_tables = len(set(self.table_keys)) < len(self.names)
        self.shared_weights = len(set(self.weight_keys)) < len(self.names)
        if not self.incident:
            self.incident = [[] for _ in self.names]
            for k, p in enumerate(self.payloads):
                self.incident[p.center].append(k)
                for u in p.others:
                    self.incident[int(u)].append(k)
        t = self.target
        self.tile_cores = [1] * t.cores
        self.hops = CoreHops(t)
        self.tile_capacity = np.array(self.tile_cores, dtype=np.int64) * self.capacity
        self.tile_tables = np.array(self.tile_cores, dtype=np.int64) * self.table_budget
        # Crossbars a unit fills at least (its rounded columns over a crossbar's); the
        # blocks of one group on one core need at most a core's crossbars, so `pack` can
        # give each its own and the group's windows never wait for a shared crossbar.
        self.xbars = -(-self.demand // t.cols)
        self.group_xbars = t.crossbars_per_core

    @property
    def tiles(self) -> int:
        return len(self.tile_cores)

    def core_tables(self, tile_of: np.ndarray) -> np.ndarray:
        """Table bytes on each core: a key's tables once per core."""
        return self._per_core(tile_of, self.tables, self.table_keys, self.shared_tables)

    def core_columns(self, tile_of: np.ndarray) -> np.ndarray:
        """Crossbar columns filled on each core: a key's blocks once per core."""
        return self._per_core(tile_of, self.demand, self.weight_keys, self.shared_weights)

    def _per_core(self, tile_of: np.ndarray, sizes: np.ndarray, keys: list[Hashable],
                  shared: bool) -> np.ndarray:
        units = np.arange(len(self.names))
        if shared:
            first: dict[tuple[int, Hashable], int] = {}
            for u, tile in enumerate(tile_of.tolist()):
                first.setdefault((tile, keys[u]), u)
            units = np.fromiter(first.values(), dtype=np.int64, count=len(first))
        return np.bincount(tile_of[units], weights=sizes[units], minlength=self.tiles)

    def owners(self, tile_of: np.ndarray) -> list[int]:
        """Each unit's first unit of its weight key on its core (itself if none before)."""
        first: dict[tuple[int, Hashable], int] = {}
        return [first.setdefault((tile, self.weight_keys[u]), u)
                for u, tile in enumerate(tile_of.tolist())]

    def cost(self, tile_of: np.ndarray) -> int:
        """hop_bytes of an assignment of units to tiles."""
        return sum(payload_cost(p, tile_of, self.hops) for p in self.payloads)

    def fits(self, tile_of: np.ndarray) -> bool:
        """Capacity (columns, tables, compute load) respected on every core."""
        return bool((self.core_columns(tile_of) <= self.tile_capacity).all()
                    and (self.core_tables(tile_of) <= self.tile_tables).all()
                    and self.loads_fit(tile_of) and self.group_crossbars_fit(tile_of))

    def group_crossbars_fit(self, core_of: np.ndarray) -> bool:
        """The blocks of every group on every core fill at most a core's crossbars."""
        mask = self.groups >= 0
        if not mask.any():
            return True
        key = core_of[mask] * (int(self.groups.max()) + 1) + self.groups[mask]
        return bool((np.bincount(key, weights=self.xbars[mask]) <= self.group_xbars).all())

    def loads_fit(self, core_of: np.ndarray) -> bool:
        """Every core holding several groups keeps its load at most `load_cap`."""
        if not self.load_cap:
            return True
        loads, groups = self.loads(core_of), self.group_counts(core_of)
        return bool(((loads <= self.load_cap) | (groups <= 1)).all())

    def _pairs(self, core_of: np.ndarray) -> np.ndarray:
        mask = self.groups >= 0
        return np.unique(np.stack([core_of[mask], self.groups[mask]]), axis=1)

    def loads(self, core_of: np.ndarray) -> np.ndarray:
        """MVM windows per inference of every core (sum over its distinct groups)."""
        pairs = self._pairs(core_of)
        return np.bincount(pairs[0], weights=self.group_load[pairs[1]],
                           minlength=self.tiles).astype(np.int64)

    def group_counts(self, core_of: np.ndarray) -> np.ndarray:
        """Distinct groups every core holds blocks of."""
        return np.bincount(self._pairs(core_of)[0], minlength=self.tiles).astype(np.int64)


def payload_cost(p: Payload, core_of: np.ndarray, hops: CoreHops) -> int:
    return p.bytes * int(hops[core_of[p.center], np.unique(core_of[p.others])].sum())


class CoreHops:
    """Mesh hops between cores (0 within a tile), computed when asked: XY routing makes
    them the Manhattan distance of the tiles, so no table grows with cores squared (a
    256x256 mesh has 2^16 tiles; an all-pairs table of its cores would take tens of GB).

    `hops[a, b]` takes cores or arrays of cores, like a numpy matrix; `hops.row(a)`
    is the hops from core a to every core, as a list (what the annealer indexes).
    """

    def __init__(self, target: Target) -> None:
        tiles = np.arange(target.cores) // target.cores_per_tile
        self.x = (tiles % target.mesh_x).astype(np.int32)
        self.y = (tiles // target.mesh_x).astype(np.int32)
        self.size = target.cores
        self._rows: dict[int, list[int]] = {}
        self._xs: list[int] | None = None  # the coordinates as lists, for _HopsFrom
        self._ys: list[int] | None = None

    def __getitem__(self, cores: tuple[Any, Any]) -> Any:
        a, b = cores
        return np.abs(self.x[a] - self.x[b]) + np.abs(self.y[a] - self.y[b])

    def row(self, a: int) -> Sequence[int]:
        """Hops from core a to every core, indexable by core (the annealer's moves index
        single elements, which lists do fastest). Lists are cached up to
        ROW_CACHE_ENTRIES hops, the oldest row dropped first: all rows of a small mesh,
        the busiest of a big one; a mesh too big to cache ROW_CACHE_MIN rows gets rows
        that compute each element (a full row per move would cost more than it saves)."""
        found = self._rows.get(a)
        if found is None:
            if self.size * ROW_CACHE_MIN > ROW_CACHE_ENTRIES:
                return _HopsFrom(self, a)
            if self._rows and (len(self._rows) + 1) * self.size > ROW_CACHE_ENTRIES:
                del self._rows[next(iter(self._rows))]
            found = self._rows[a] = self[a, slice(None)].tolist()
        return found

    def most(self) -> int:
        """The most hops between two cores: opposite corners of the occupied mesh."""
        if not self.size:
            return 0
        s, d = self.x + self.y, self.x - self.y
        return int(max(s.max() - s.min(), d.max() - d.min()))


class _HopsFrom(Sequence[int]):
    """Hops from one core to every core of a huge mesh, each computed when indexed."""

    def __init__(self, hops: CoreHops, a: int) -> None:
        if hops._xs is None or hops._ys is None:
            hops._xs, hops._ys = hops.x.tolist(), hops.y.tolist()
        self.xs, self.ys = hops._xs, hops._ys
        self.x, self.y, self.size = self.xs[a], self.ys[a], hops.size

    @overload
    def __getitem__(self, c: int) -> int: ...
    @overload
    def __getitem__(self, c: slice) -> Sequence[int]: ...
    def __getitem__(self, c: int | slice) -> int | Sequence[int]:
        if isinstance(c, slice):
            return [self[k] for k in range(*c.indices(self.size))]
        return abs(self.x - self.xs[c]) + abs(self.y - self.ys[c])

    def __len__(self) -> int:
        return self.size


def _table_bytes(module: Module, unit: Unit, reducers: set[str]) -> int:
    if unit.kind == "block":
        return TABLE_BYTES * unit.weight_cols if unit.name in reducers else 0
    op = module.op(unit.op)
    if op.kind == "gather":  # its distinct tables of band offsets, i32
        return sum(4 * table.size for table in geometry(module, op).tables)
    h, w, c = image_dims(module.values[op.outputs[0]])
    return TABLE_BYTES * (c if op.kind == "pool" else min(h * w * c, CHUNK))


def _digest(*parts: bytes) -> bytes:
    return hashlib.blake2b(b"".join(parts), digest_size=16).digest()


def _tables_of(module: Module, op: Op) -> bytes:
    """A digest of what `op`'s tables are made of: a gather's tables themselves (offsets
    within its bands), else its kind, attributes, result shape and constant operands other
    than a matvec's weights."""
    if op.kind == "gather":
        return _digest(b"gather", *(table.tobytes() for table in geometry(module, op).tables))
    constants = [module.constants[v].tobytes() for k, v in enumerate(op.inputs)
                 if v in module.constants and not (op.kind == "matvec" and k == 1)]
    return _digest(op.kind.encode(), repr(sorted(op.attrs.items())).encode(),
                   repr(tuple(module.values[op.outputs[0]].shape)).encode(), *constants)


def _table_keys(module: Module, found: list[Unit]) -> list[Hashable]:
    """Each unit's table key: its op's digest (computed once per op), a block's with its
    column range."""
    digests: dict[str, bytes] = {}
    keys: list[Hashable] = []
    for unit in found:
        if unit.op not in digests:
            digests[unit.op] = _tables_of(module, module.op(unit.op))
        keys.append((digests[unit.op], unit.j, unit.weight_cols) if unit.kind == "block"
                    else digests[unit.op])
    return keys


def _weight_keys(module: Module, found: list[Unit]) -> list[Hashable]:
    """What each block unit's crossbar cells hold (cimc.dialect.chip.weight_key); a key
    of its own for a vector op."""
    return [weight_key(module, module.op(u.op), u.i, u.j, u.replica) if u.kind == "block"
            else ("unit", k) for k, u in enumerate(found)]


def build_problem(module: Module, target: Target,
                  edges: list[TrafficEdge] | None = None) -> tuple[Problem, list[Unit]]:
    """The placement problem of a tiled, replicated module."""
    found = units(module, target)
    if edges is None:
        edges = unit_edges(module, target)
    index = {u.name: k for k, u in enumerate(found)}
    reducers = {e.dst for e in edges if e.kind == "psum"}
    reducers |= {e.src for e in edges if e.kind in ("activation", "output")}
    demand = np.array([rounded_width(u.weight_cols, target.cols) * u.slices
                       if u.kind == "block" else 0 for u in found], dtype=np.int64)
    tables = np.array([_table_bytes(module, u, reducers) for u in found], dtype=np.int64)
    grouped: dict[Hashable, tuple[str, set[str], int, str]] = {}
    for e in edges:
        if e.src == GLOBAL or e.dst == GLOBAL:
            continue
        center, other = (e.dst, e.src) if e.kind == "psum" else (e.src, e.dst)
        entry = grouped.setdefault(e.payload, (center, set(), e.bytes, e.kind))
        entry[1].add(other)
    payloads = [Payload(index[c], np.array(sorted(index[o] for o in others), dtype=np.int64),
                        size, kind)
                for c, others, size, kind in grouped.values() if size > 0]
    # A group per matvec replica and per vector op; its load is the cycles its main work
    # takes a core per inference (the plan's `core_bound`): MVMs one window after the
    # other, or a vector op's vector instructions.
    group_index: dict[tuple[str, int], int] = {}
    for u in found:
        group_index.setdefault((u.op, u.replica), len(group_index))
    groups = np.array([group_index[u.op, u.replica] for u in found], dtype=np.int64)
    group_load = np.zeros(len(group_index), dtype=np.int64)
    for u, g in zip(found, groups, strict=True):
        if u.kind == "block":
            group_load[g] = u.windows * target.mvm_cycles
        else:
            op = module.op(u.op)
            oh = image_dims(module.values[op.outputs[0]])[0]
            group_load[g] = math.ceil(oh * vector_row_work(module, op, target))
    problem = Problem([u.name for u in found], demand, tables, payloads, target,
                      target.crossbars_per_core * target.cols, target.local_memory_bytes // 2,
                      np.array([u.crossbar_columns_needed for u in found], dtype=np.int64),
                      groups=groups, group_load=group_load,
                      load_cap=int(group_load.max() * SHARED_LOAD) if len(group_load) else 0,
                      table_keys=_table_keys(module, found),
                      weight_keys=_weight_keys(module, found))
    # A vector op keeps its core to itself: counted as more than a shared core may carry.
    # Beside a matvec it would delay that layer's rows, and so the whole pipeline, by its
    # own (MobileNetV2 at 32x32 on pimcomp, layer-order fill: 1.83 M modelled cycles with
    # vector ops sharing cores, 1.76 M without).
    for u, g in zip(found, groups, strict=True):
        if u.kind != "block" and problem.load_cap:
            problem.group_load[g] = max(problem.group_load[g], problem.load_cap + 1)
    check_fits(problem, found)
    return problem, found


def check_fits(problem: Problem, found: list[Unit]) -> None:
    """CimcError when the blocks cannot fit the target's crossbars."""
    target = problem.target
    per_xbar = target.cols
    distinct = {key: int(d) for key, d in zip(problem.weight_keys, problem.demand,
                                               strict=True)}
    needed = int(-(-sum(distinct.values()) // per_xbar))
    available = target.cores * target.crossbars_per_core
    if needed > available:
        cores = -(-needed // target.crossbars_per_core)
        raise CimcError(f"the model needs {needed} crossbars on {cores} cores but target "
                        f"{target.name!r} has {available} crossbars on {target.cores} cores; "
                        "choose a bigger target, or one whose crossbars can be "
                        "reprogrammed (the model then runs in phases)")
    for u, d in zip(found, problem.demand, strict=True):
        if d > problem.capacity:
            raise CimcError(f"op {u.op!r}: a block of {u.weight_cols} weight columns does "
                            f"not fit one core of target {target.name!r}")


def distribute(problem: Problem, tile_of: np.ndarray) -> np.ndarray | None:
    """Cores of the units placed on locations (the identity while locations are cores);
    None if some location is over capacity."""
    return tile_of.astype(np.int64).copy() if problem.fits(tile_of) else None


def pack(problem: Problem, core_of: np.ndarray, slices: list[int]
         ) -> dict[int, list[tuple[int, int]]]:
    """Crossbar and first column of every slice of every block, per unit index.

    Per core, blocks go largest rounded width first (then in layer order) into a
    crossbar with room, at offsets that are multiples of their rounded width;
    since the widths divide each other every crossbar's fill is a multiple of
    the width being placed, so any crossbar not full has room and nothing is
    wasted. Of those, a block takes the one holding the fewest other blocks of
    its group (then the first): blocks of one group sharing a crossbar take
    turns at every window (`cimc.analysis.plan.mvm_depth`), so packed together
    they would multiply the group's MVM time on that core. A block whose weights an
    earlier block on its core holds (`Problem.owners`) takes that block's places.
    """
    target = problem.target
    owner = problem.owners(core_of)
    per_core: dict[int, list[int]] = defaultdict(list)
    for u in np.flatnonzero(problem.demand).tolist():
        if owner[u] == u:
            per_core[int(core_of[u])].append(u)
    places: dict[int, list[tuple[int, int]]] = {}
    for core in sorted(per_core):
        fill = [0] * target.crossbars_per_core
        users: dict[tuple[int, int], int] = defaultdict(int)  # (crossbar, group) -> blocks
        width_of = {u: int(problem.demand[u]) // slices[u] for u in per_core[core]}
        for u in sorted(per_core[core], key=lambda u: (-width_of[u], u)):
            group = int(problem.groups[u])
            spots: list[tuple[int, int]] = []
            for _ in range(slices[u]):
                mine = {x for x, _ in spots}
                room = [x for x, f in enumerate(fill) if f + width_of[u] <= target.cols]
                if not room:
                    raise CimcError(f"internal: core {core} overfull in placement packing")
                xbar = min(room, key=lambda x: (0 if x in mine else users[x, group], x))
                spots.append((xbar, fill[xbar]))
                fill[xbar] += width_of[u]
            for x in {x for x, _ in spots}:
                users[x, group] += 1
            places[u] = spots
    for u in np.flatnonzero(problem.demand).tolist():
        places[u] = places[owner[u]]
    return places
