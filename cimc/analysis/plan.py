"""The dataflow plan of a placed module: which core computes which output rows,
which rows travel where (with which tag), in which order each core works, and
the bounds of that schedule.

A *group* is one replica of a matvec (its blocks may sit on several cores) or
one vector op. A group computes its output rows in order, one *task* per row;
a task runs on every core of the group (a *part*). Rows travel as messages
(cimc/analysis/traffic.py is the byte model; this plan emits exactly those messages):
the reducer of each column block of a matvec replica, or a vector op's core,
sends each row it computes to every core that needs it, and that core's part
receives it into its line buffer (band) when the band needs it.

Order: every task gets an ASAP start time (a group does its rows in order; a
row starts when the rows it needs are done; estimated durations). Each core
runs its parts in the order of `image * period + start`, ties by layer and
row: one total order of tasks that every core follows, and in which a task
only waits for earlier tasks, so no core ever waits on a message that is not
already sent or about to be (no deadlock), and per channel the receive order
equals the send order. `period` is 0 in latency mode (one image) and, in
throughput mode, the estimated slowest stage, so image m+1 enters the
pipeline while image m is still in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from cimc.analysis import bounds
from cimc.analysis.bounds import Task, tails, task_graph
from cimc.analysis.gather import geometry
from cimc.analysis.traffic import (
    VECTOR_KINDS,
    block_input_channels,
    block_name,
    column_ranges,
    operand_rows,
    reducer_block,
    replica_rows,
    replicas,
    sender_units,
    source_op,
    unit_cores,
)
from cimc.analysis.window import Window, band_plan
from cimc.dialect.chip import blocks_of, image_dims, runtime_operands
from cimc.ir.module import Module, Op
from cimc.targets import Target


@dataclass(frozen=True)
class Recv:
    """One piece of an input row a part receives: channels [lo, hi) of row iy from
    `core` (None: loaded from global memory) on `tag`."""

    iy: int
    core: int | None
    lo: int
    hi: int
    tag: int


@dataclass
class Group:
    op: Op
    replica: int
    layer: int
    rows: list[int]
    cores: list[int]  # cores with a part, sorted
    reducers: dict[int, int] = field(default_factory=dict)  # column block -> core
    # part core -> operand index -> one list of Recv per row (in `rows` order)
    recvs: dict[int, dict[int, list[list[Recv]]]] = field(default_factory=dict)
    # reduced column (or 0 for a vector op) -> row -> [(dst core, tag)]
    sends: dict[int, dict[int, list[tuple[int, int]]]] = field(default_factory=dict)
    psum_tags: dict[int, int] = field(default_factory=dict)  # column -> tag
    start: dict[int, float] = field(default_factory=dict)  # row -> ASAP start (estimate)
    duration: float = 0.0  # estimated cycles of one row
    bound: float = 0.0  # cycles of one row counting only MVMs and main vector work

    @property
    def name(self) -> str:
        return f"{self.op.name}#{self.replica}" if self.op.kind == "matvec" else self.op.name


@dataclass
class Plan:
    groups: list[Group]
    order: dict[int, list[tuple[int, int, int]]]  # core -> [(image, group index, row)]
    period: float
    latency_bound: float
    core_bound: dict[int, float]  # core -> MVM (+ main vector) cycles per inference
    tags: int
    crossbar_bound: float = 0.0  # MVM cycles per inference of the busiest crossbar


def _blocks_on(op: Op, replica: int, cores: dict[str, int]) -> dict[int, list[tuple[int, int]]]:
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, j in blocks_of(op):
        found[cores[block_name(op, replica, i, j)]].append((i, j))
    return found


def mvm_depth(op: Op, replica: int) -> dict[int, int]:
    """Core -> MVMs one window of `replica` runs one after the other on that core: its
    blocks on different crossbars run at once (the simulator's crossbars work in
    parallel), blocks sharing a crossbar take turns."""
    s = op.attrs["slices"]
    flat = op.attrs["block_slices"]
    count = len(blocks_of(op))
    users: dict[tuple[int, int], int] = defaultdict(int)
    for k in range(replica * count, (replica + 1) * count):
        core = int(op.attrs["block_cores"][k])
        for xbar in sorted({int(flat[2 * (k * s + d)]) for d in range(s)}):
            users[(core, xbar)] += 1
    depth: dict[int, int] = defaultdict(int)
    for (core, _), n in sorted(users.items()):
        depth[core] = max(depth[core], n)
    return dict(depth)


def _estimates(module: Module, group: Group, target: Target,
               on_core: dict[int, list[tuple[int, int]]]) -> tuple[float, float]:
    """(estimated cycles, lower-bound cycles) of one row of `group`."""
    op = group.op
    oh, ow, n = image_dims(module.values[op.outputs[0]])
    lat = target.latency
    if op.kind == "matvec":
        win = Window.of(module, op)
        most = max(mvm_depth(op, group.replica).values())
        mvm = ow * most * target.mvm_cycles
        over = ow * (win.window_bytes * lat.copy_per_byte + n * (1.5 + lat.requant_per_element)
                     + 2 * lat.send_setup + 8)
        return mvm + over, mvm
    work = vector_row_work(module, op, target)
    if op.kind == "pool":
        win = Window.of(module, op)
        return work + ow * (win.window_bytes * lat.copy_per_byte + 8), work
    return work + 2 * lat.send_setup, work


def vector_row_work(module: Module, op: Op, target: Target) -> float:
    """Cycles of a vector op's main work (its vector instructions) for one output row: a
    lower bound of the row's time on its core."""
    _, ow, n = image_dims(module.values[op.outputs[0]])
    lat = target.latency
    if op.kind == "pool":
        win = Window.of(module, op)
        return ow * n * win.kh * win.kw * lat.vector_per_element
    if op.kind == "gather":  # one vgather of the row
        return ow * n * lat.vector_per_element
    if op.kind == "pixel_softmax":  # about a dozen vector instructions per channel
        return ow * n * (12 * lat.vector_per_element + lat.requant_per_element)
    if op.kind == "pixel_layernorm":  # about ten vector instructions per channel
        return ow * n * (10 * lat.vector_per_element + lat.requant_per_element)
    if op.kind == "dot":  # a product and a sum of K elements per output element
        depth = image_dims(module.values[op.inputs[0]])[2]
        return ow * n * (2 * depth * lat.vector_per_element) + ow * n * lat.requant_per_element
    return ow * n * (3 * lat.vector_per_element + lat.requant_per_element)


def build(module: Module, target: Target, stream: int = 1, throughput: bool = False) -> Plan:
    """The plan of a placed module (see the module docstring)."""
    cores = unit_cores(module)
    groups: list[Group] = []
    by_op: dict[str, list[Group]] = {}
    ops = [op for op in module.ops() if op.kind == "matvec" or op.kind in VECTOR_KINDS]
    tag = 0
    for layer, op in enumerate(ops):
        oh = image_dims(module.values[op.outputs[0]])[0]
        found = []
        for r in range(replicas(op) if op.kind == "matvec" else 1):
            if op.kind == "matvec":
                on_core = _blocks_on(op, r, cores)
                group = Group(op, r, layer, replica_rows(oh, replicas(op), r), sorted(on_core))
                group.reducers = {j: cores[block_name(op, r, reducer_block(op, j), j)]
                                  for j in range(len(column_ranges(module, op)))}
                for j in sorted(group.reducers):
                    group.psum_tags[j] = tag
                    tag += 1
            else:
                on_core = {int(op.attrs["core"]): []}
                group = Group(op, r, layer, list(range(oh)), [int(op.attrs["core"])])
            group.duration, group.bound = _estimates(module, group, target, on_core)
            found.append(group)
        by_op[op.name] = found
        groups += found
    index = {id(g): k for k, g in enumerate(groups)}
    # Receives and the matching sends.
    for group in groups:
        op = group.op
        operands = runtime_operands(module, op)
        for k, value in enumerate(operands):
            src = source_op(module, value)
            h, w, c = image_dims(module.values[value])
            senders = [] if src is None else _senders(module, src, by_op[src.name])
            for core in group.cores:
                need = _needed_channels(module, group, core, cores, c)
                rows = input_rows_per_task(module, op, group.rows, k)
                # Messages of one tag arrive in the order they were sent, the producer's
                # row order, so a tag per edge needs the rows received in increasing order.
                # A dilated window receives them out of order (0, 2, 4 then 1, 3, 5):
                # then each row gets its own tag.
                flat = [iy for task_rows in rows for iy in task_rows]
                per_row = any(a > b for a, b in zip(flat, flat[1:], strict=False))
                lists = []
                tags: dict[tuple[int, int, int], int] = {}
                for task_rows in rows:
                    pieces = []
                    for iy in task_rows:
                        if src is None:
                            pieces.append(Recv(iy, None, 0, c, -1))
                            continue
                        for sgroup, column, score, lo, hi, produced in senders:
                            if iy not in produced or not need[lo:hi].any():
                                continue
                            key = (index[id(sgroup)], column, iy if per_row else -1)
                            if key not in tags:
                                tags[key] = tag
                                tag += 1
                            pieces.append(Recv(iy, score, lo, hi, tags[key]))
                            sgroup.sends.setdefault(column, {}).setdefault(iy, []).append(
                                (core, tags[key]))
                    lists.append(pieces)
                group.recvs.setdefault(core, {})[k] = lists
    preds, succs = task_graph(groups, module, input_rows_per_task)
    _list_schedule(groups, preds, succs)
    starts = {(index[id(g)], oy): g.start[oy] for g in groups for oy in g.rows}
    # A core runs its tasks one after the other, and within a task the windows one after
    # the other (each waits for its MVMs): per group, rows x pixels x the MVMs in turn.
    core_bound: dict[int, float] = defaultdict(float)
    crossbar_busy: dict[tuple[int, int], float] = defaultdict(float)
    depths = {id(g): mvm_depth(g.op, g.replica) for g in groups if g.op.kind == "matvec"}
    for g in groups:
        if g.op.kind != "matvec":
            for core in g.cores:
                core_bound[core] += g.bound * len(g.rows)
            continue
        ow = image_dims(module.values[g.op.outputs[0]])[1]
        for core, depth in depths[id(g)].items():
            core_bound[core] += len(g.rows) * ow * depth * target.mvm_cycles
        s, flat, count = g.op.attrs["slices"], g.op.attrs["block_slices"], len(blocks_of(g.op))
        for k in range(g.replica * count, (g.replica + 1) * count):
            core = int(g.op.attrs["block_cores"][k])
            for xbar in sorted({int(flat[2 * (k * s + d)]) for d in range(s)}):
                crossbar_busy[(core, xbar)] += len(g.rows) * ow * target.mvm_cycles
    estimate: dict[int, float] = defaultdict(float)
    for g in groups:
        for core in g.cores:
            estimate[core] += g.duration * len(g.rows)
    period = 0.0
    if throughput:
        def span() -> float:
            return max(starts[(index[id(g)], g.rows[-1])] + g.duration
                       - starts[(index[id(g)], g.rows[0])] for g in groups)

        if span() > max(estimate.values()):  # the span, not a core, would set the period
            _compact(groups, preds, starts, max(estimate.values()))
        period = max([*estimate.values(), span()])
    order: dict[int, list[tuple[float, int, int, int]]] = defaultdict(list)
    for m in range(stream):
        for g in groups:
            for core in g.cores:
                for oy in g.rows:
                    gi = index[id(g)]
                    order[core].append((m * period + starts[(gi, oy)], gi, oy, m))
    final = {core: [(m, gi, oy) for _, gi, oy, m in sorted(items)]
             for core, items in sorted(order.items())}
    # The latency bound: critical path and per-core bounds counting only MVMs (and main
    # vector work) (cimc/analysis/bounds.py).
    latency_bound = bounds.latency_bound(
        groups, preds, succs, lambda g, core: row_bound(module, target, g, core,
                                                        depths.get(id(g))))
    for g in groups:  # keep the estimated starts for reports
        for oy in g.rows:
            g.start[oy] = starts[(index[id(g)], oy)]
    return Plan(groups, final, period, latency_bound, dict(sorted(core_bound.items())), tag,
                max(crossbar_busy.values(), default=0.0))


def row_bound(module: Module, target: Target, g: Group, core: int,
              depth: dict[int, int] | None = None) -> float:
    """Cycles `core` needs at least for one row of `g`, counting only MVMs (the windows
    one after the other, blocks sharing a crossbar in turn) or a vector op's main work;
    `depth` is `mvm_depth` of a matvec group when the caller has it."""
    if g.op.kind != "matvec":
        return g.bound
    ow = image_dims(module.values[g.op.outputs[0]])[1]
    return ow * (depth or mvm_depth(g.op, g.replica))[core] * target.mvm_cycles


def _senders(module: Module, src: Op, groups: list[Group]
             ) -> list[tuple[Group, int, int, int, int, set[int]]]:
    """(group, column, core, lo, hi, rows) of each unit sending `src`'s output."""
    found = []
    ranges = column_ranges(module, src)
    units = sender_units(module, src)
    for g in groups:
        for j, (lo, hi) in enumerate(ranges):
            if src.kind == "matvec":
                found.append((g, j, g.reducers[j], lo, hi, set(g.rows)))
            else:
                found.append((g, 0, g.cores[0], lo, hi, set(units[0][3])))
    return found


def _needed_channels(module: Module, group: Group, core: int, cores: dict[str, int],
                     channels: int) -> np.ndarray:
    need = np.zeros(channels, dtype=bool)
    if group.op.kind != "matvec":
        need[:] = True
        return need
    for i, j in blocks_of(group.op):
        if cores[block_name(group.op, group.replica, i, j)] == core:
            need[block_input_channels(module, group.op, i)] = True
    return need


def input_rows_per_task(module: Module, op: Op, rows: list[int], operand: int = 0
                        ) -> list[list[int]]:
    """For each output row, the rows of runtime operand `operand` its task receives (in
    order)."""
    if op.kind == "gather":
        return geometry(module, op).received(operand, rows)
    if op.kind in ("matvec", "pool"):
        return [[iy for _, iy in step.fills if iy is not None]
                for step in band_plan(Window.of(module, op), rows)]
    return operand_rows(module, op, rows, operand)


def _list_schedule(groups: list[Group], preds: dict[Task, list[Task]],
                   succs: dict[Task, list[Task]]) -> None:
    """Estimated start of every row when each core runs one task at a time: a task
    becomes ready when the group's previous row and the rows it needs are done, and
    starts when all its cores are free (ready tasks first come, first served; among
    tasks ready at once, the one with the longest estimated path to the end first)."""
    import heapq

    tail = tails(preds, succs, lambda task: groups[task[0]].duration)
    waiting = {task: len(p) for task, p in preds.items()}
    ready = [(0.0, -tail[task], task) for task, n in sorted(waiting.items()) if n == 0]
    heapq.heapify(ready)
    finish: dict[tuple[int, int], float] = {}
    free: dict[int, float] = defaultdict(float)
    while ready:
        at, _, (gi, t) = heapq.heappop(ready)
        g = groups[gi]
        start = max([at, *(free[c] for c in g.cores)])
        g.start[g.rows[t]] = start
        finish[(gi, t)] = start + g.duration
        for c in g.cores:
            free[c] = finish[(gi, t)]
        for nxt in succs.get((gi, t), []):
            waiting[nxt] -= 1
            if not waiting[nxt]:
                heapq.heappush(ready, (max(finish[p] for p in preds[nxt]), -tail[nxt], nxt))


def _compact(groups: list[Group], preds: dict[Task, list[Task]],
             starts: dict[tuple[int, int], float], busiest: float) -> None:
    """Throughput mode: delay each group's early rows to just before its later ones
    (a row at most `busiest / rows`, or one estimated duration if longer, before the
    next), then every task after the tasks it needs, until nothing moves. A group's
    rows then span at most about the busiest core's work, not the whole single-image
    schedule, so the period (at least that span, so a group never mixes two images'
    rows) can come down to the busiest core's work."""
    def key(task: Task) -> tuple[int, int]:
        return (task[0], groups[task[0]].rows[task[1]])

    changed = True
    while changed:
        changed = False
        for task in sorted(preds):
            ready = max((starts[key(p)] + groups[p[0]].duration for p in preds[task]),
                        default=0.0)
            if ready > starts[key(task)]:
                starts[key(task)] = ready
                changed = True
        for gi, g in enumerate(groups):
            last = starts[(gi, g.rows[-1])]
            for k, oy in enumerate(g.rows):
                late = last - (len(g.rows) - 1 - k) * max(g.duration, busiest / len(g.rows))
                if late > starts[(gi, oy)]:
                    starts[(gi, oy)] = late
                    changed = True
