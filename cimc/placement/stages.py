"""The pipeline's latency as a placement decides it: the critical path and every
shared core's serialization (cimc/analysis/bounds.py), for the cpsat placer's repair.

hop_bytes does not see that groups sharing a core run one row at a time: two layers
on one core whose rows are due at the same time delay each other, and the
pipeline behind them. The plan's latency bound (docs/backend.md, "Bounds") counts
exactly that: the critical path over the row tasks, and per core Jackson's
preemptive schedule of its tasks with their critical-path releases and tails.
Releases and tails do not depend on the placement (a row's bound is its MVMs,
`ow x mvm_cycles` with the group's blocks on crossbars of their own, or a vector
op's vector work), so a placement's bound is the largest of the path and the
Jackson bounds of its shared cores, recomputed per core when groups move.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.analysis.bounds import jackson, tails, task_graph
from cimc.analysis.plan import input_rows_per_task, vector_row_work
from cimc.analysis.traffic import replica_rows, replicas, units
from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op
from cimc.targets import Target


@dataclass
class _Group:
    """What cimc.analysis.bounds reads of a group (its `Group` protocol)."""

    op: Op
    rows: list[int]
    bound: float
    cores: list[int]


class Stages:
    """Row tasks of every group of the placement problem (problem.groups' indices), with
    their placement-independent releases and tails."""

    def __init__(self, module: Module, target: Target) -> None:
        index: dict[tuple[str, int], int] = {}
        groups: list[_Group] = []
        for u in units(module, target):
            if (u.op, u.replica) in index:
                continue
            index[u.op, u.replica] = len(groups)
            op = module.op(u.op)
            oh, ow, _ = image_dims(module.values[op.outputs[0]])
            if u.kind == "block":
                rows = replica_rows(oh, replicas(op), u.replica)
                bound = float(ow * target.mvm_cycles)
            else:
                rows, bound = list(range(oh)), vector_row_work(module, op, target)
            groups.append(_Group(op, rows, bound, []))
        preds, succs = task_graph(groups, module, input_rows_per_task)

        def duration(task: tuple[int, int]) -> float:
            return groups[task[0]].bound

        release: dict[tuple[int, int], float] = {}
        for task in sorted(preds):
            release[task] = max((release[p] + duration(p) for p in preds[task]), default=0.0)
        tail = tails(preds, succs, duration)
        self.path = max((release[t] + duration(t) + tail[t] for t in preds), default=0.0)
        # Per group, its tasks as Jackson's jobs (release, duration, tail).
        self.jobs: list[list[tuple[float, float, float]]] = [[] for _ in groups]
        for gi, t in sorted(preds):
            self.jobs[gi].append((release[gi, t], duration((gi, t)), tail[gi, t]))

    def core(self, groups: list[int]) -> float:
        """The latency bound one core holding `groups` allows (0 for one group alone: its
        rows are on the critical path already)."""
        if len(groups) < 2:
            return 0.0
        return jackson(sorted(job for g in groups for job in self.jobs[g]))
