"""replicate: choose how many copies of each matvec's weights to program.

A matvec computes one window per output pixel; with `replicas = R` its output
rows are split round-robin over R copies of its blocks, so one copy computes
`ceil(OH / R) * OW` windows per inference. In a pipeline every layer is a
stage and the slowest stage sets the throughput, so the policy balances the
stages: starting from one copy each, it repeatedly gives one more copy to the
matvec whose copy has the most windows (ties: the earlier layer), as long as
the copies still fit `budget` x the target's crossbars, the layer has rows
left to split, and the extra copy lowers that stage's time. It stops when the
slowest stage cannot be made faster.

Objective: minimise max over matvecs of ceil(OH / R) * OW (windows per copy,
times the MVM time that is the stage's time), subject to
sum over matvecs of R x crossbars(one copy) <= budget x crossbars of the target.
`budget = 0` turns replication off (one copy each). A copy's crossbars are
counted per block as ceil(cols x slices / crossbar columns); the default
budget keeps 10 % slack for the placer's packing.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

from cimc.analysis.phases import choose_copies
from cimc.dialect.chip import block_shape, blocks_of, check_columns, image_dims, weight_key
from cimc.dialect.phased import phase_modules
from cimc.ir.module import Module, Op
from cimc.pass_base import BackendPass
from cimc.targets import Target


def copy_crossbars(module: Module, op: Op, target: Target) -> int:
    """Crossbars one copy of a matvec's blocks takes."""
    total = 0
    for i, j in blocks_of(op):
        cols = block_shape(module, op, i, j)[1]
        total += -(-(cols.stop - cols.start) * op.attrs["slices"] // target.cols)
    return total


def check_fits(module: Module, matvecs: list[Op], target: Target) -> None:
    """CimcError, before any costly work, when one copy of every block cannot fit the
    target's crossbars even packed perfectly (cell columns / crossbar columns; blocks of
    equal weights, which may share cells, once)."""
    columns: dict[Hashable, int] = {}
    for op in matvecs:
        for i, j in blocks_of(op):
            cols = block_shape(module, op, i, j)[1]
            columns[weight_key(module, op, i, j)] = (cols.stop - cols.start) * target.slices
    check_columns(sum(columns.values()), target)


@dataclass
class Replicate(BackendPass):
    name: ClassVar[str] = "replicate"
    requires: ClassVar[tuple[str, ...]] = ("tile",)
    budget: float = 0.0  # fraction of the target's crossbars the copies may use

    def apply(self, module: Module) -> None:
        for phase in phase_modules(module):  # each phase has the whole chip
            self._replicate(phase)

    def _replicate(self, module: Module) -> None:
        target = self.target
        matvecs = [op for op in module.ops() if op.kind == "matvec"]
        check_fits(module, matvecs, target)
        stages = [(*image_dims(module.values[op.outputs[0]])[:2],
                   copy_crossbars(module, op, target)) for op in matvecs]
        limit = self.budget * target.total_crossbars
        chosen = choose_copies(stages, limit) if self.budget > 0 else [1] * len(matvecs)
        copies = {op.name: c for op, c in zip(matvecs, chosen, strict=True)}
        for op in matvecs:
            op.attrs["replicas"] = copies[op.name]
