"""The task graph of a plan and the latency lower bound it allows.

A *task* is one output row of one group, `(group index, row index)`. It needs
the previous row of its group and the input rows its window reads (or the
operand rows of a vector op). Groups are in module order and rows in order, so
sorting the tasks gives a topological order.

The latency bound holds for every schedule of this placement in which a core
runs one task at a time (docs/backend.md, "Bounds"), with tasks costing only
their MVMs (and main vector work):

* the critical path: ASAP over the task graph;
* per core, the preemptive schedule of its tasks, each released at its
  critical-path earliest start and followed by its critical-path tail,
  running the released task with the longest tail first (Jackson's rule:
  optimal for one machine with release and delivery times when preemption
  is allowed, hence a lower bound without it). The core's tasks cannot all
  end earlier, and after each one its tail still has to run.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from cimc.analysis.traffic import source_op
from cimc.dialect.chip import runtime_operands
from cimc.ir.module import Module, Op

Task = tuple[int, int]


class Group(Protocol):
    """What the bound reads of a group of the plan (cimc/analysis/plan.py `Group`, which
    builds on this module): its op, the output rows it computes in order, the cores
    with a part of it, and the cycles of one row counting only its MVMs (and main
    vector work)."""

    @property
    def op(self) -> Op: ...
    @property
    def rows(self) -> list[int]: ...
    @property
    def cores(self) -> list[int]: ...
    @property
    def bound(self) -> float: ...


G = TypeVar("G", bound=Group)


def task_graph(groups: Sequence[Group], module: Module,
               input_rows: Callable[[Module, Op, list[int], int], list[list[int]]]
               ) -> tuple[dict[Task, list[Task]], dict[Task, list[Task]]]:
    """(predecessors, successors) of every task; `input_rows(module, op, rows, k)` gives
    the rows of runtime operand k each output row's task reads."""
    producer: dict[tuple[str, int], Task] = {}
    for gi, g in enumerate(groups):
        for t, oy in enumerate(g.rows):
            producer[(g.op.name, oy)] = (gi, t)
    preds: dict[Task, list[Task]] = {}
    succs: dict[Task, list[Task]] = defaultdict(list)
    for gi, g in enumerate(groups):
        operands = runtime_operands(module, g.op)
        needs = [(source_op(module, v), input_rows(module, g.op, g.rows, k))
                 for k, v in enumerate(operands)]
        for t in range(len(g.rows)):
            found = [(gi, t - 1)] if t else []
            for src, rows in needs:
                if src is not None:
                    found += [producer[(src.name, iy)] for iy in rows[t]]
            preds[(gi, t)] = sorted(set(found))
            for p in preds[(gi, t)]:
                succs[p].append((gi, t))
    return preds, dict(succs)


def tails(preds: dict[Task, list[Task]], succs: dict[Task, list[Task]],
          duration: Callable[[Task], float]) -> dict[Task, float]:
    """Longest path from the end of each task to the end of the graph."""
    tail: dict[Task, float] = {}
    for task in sorted(preds, reverse=True):
        tail[task] = max((duration(s) + tail[s] for s in succs.get(task, [])), default=0.0)
    return tail


def latency_bound(groups: Sequence[G], preds: dict[Task, list[Task]],
                  succs: dict[Task, list[Task]], part: Callable[[G, int], float]
                  ) -> float:
    """The larger of the critical path and every core's Jackson bound (module docstring);
    `part(group, core)` is the MVM (+ main vector) time of one row's part on `core`."""
    def bound(task: Task) -> float:
        return groups[task[0]].bound

    release: dict[Task, float] = {}
    for task in sorted(preds):
        release[task] = max((release[p] + bound(p) for p in preds[task]), default=0.0)
    tail = tails(preds, succs, bound)
    path = max((release[t] + bound(t) + tail[t] for t in preds), default=0.0)
    jobs: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for gi, t in sorted(preds):
        for core in groups[gi].cores:
            jobs[core].append((release[(gi, t)], part(groups[gi], core), tail[(gi, t)]))
    return max([path, *(jackson(sorted(j)) for _, j in sorted(jobs.items()))])


def jackson(jobs: list[tuple[float, float, float]]) -> float:
    """max(completion + tail) of the preemptive longest-tail-first schedule of jobs
    (release, duration, tail) sorted by release."""
    now, k, best = 0.0, 0, 0.0
    running: list[tuple[float, float]] = []  # (-tail, time left)
    while k < len(jobs) or running:
        if not running and now < jobs[k][0]:
            now = jobs[k][0]
        while k < len(jobs) and jobs[k][0] <= now:
            heapq.heappush(running, (-jobs[k][2], jobs[k][1]))
            k += 1
        q, left = heapq.heappop(running)
        step = min(left, (jobs[k][0] if k < len(jobs) else float("inf")) - now)
        now += step
        if step < left:
            heapq.heappush(running, (q, left - step))
        else:
            best = max(best, now - q)
    return best
