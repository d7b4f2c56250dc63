"""partition: split a module whose weights exceed the chip into phases.

A model whose crossbar blocks fit the target is one phase and is left exactly as it
is. Otherwise every chip op gets `phase = p`: phases are contiguous ranges of the
program order, each fitting the chip's crossbars, run one after another with the
crossbars reprogrammed in between. A matvec larger than the chip is split by output
channels: `column_phases` gives the phase of each of its column blocks (`tile` made
one column of blocks fit the chip) (docs/backend.md, "partition"; the cost model and
both methods are cimc/analysis/phases.py). Options: `method` (`optimal`, the
default: dynamic programming over the cut points minimising the estimated time of a
batch; `greedy`: the next layer joins the current phase while it fits), `batch`
(inferences per batch: reprogramming is paid once per phase per batch) and `budget`
(the replication policy's crossbar fraction inside each phase, as `replicate`'s).

The pass refuses, naming it, a layer whose weights alone exceed the chip, and any
split on a target whose crossbars cannot be reprogrammed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from cimc.analysis.phases import METHODS, PhasePlan, partition
from cimc.diagnostics import CimcError
from cimc.ir.module import Module
from cimc.pass_base import BackendPass


@dataclass
class Partition(BackendPass):
    name: ClassVar[str] = "partition"
    requires: ClassVar[tuple[str, ...]] = ("tile",)
    method: str = "optimal"
    batch: int = 1
    budget: float = 0.0
    plan: PhasePlan | None = field(default=None, init=False, repr=False)

    def apply(self, module: Module) -> None:
        if self.method not in METHODS:
            raise CimcError(f"partition: method {self.method!r}: choose one of "
                            f"{', '.join(METHODS)}")
        if not 1 <= self.batch <= 2**16:
            raise CimcError(f"partition: batch {self.batch}: give an integer 1..65536")
        self.plan = partition(module, self.target, self.method, self.batch, self.budget)
        if len(self.plan.phases) == 1:
            return  # fits: unchanged
        column_phases: dict[str, list[int]] = {}
        for number, phase in enumerate(self.plan.phases):
            for layer in self.plan.layers[phase.start:phase.stop]:
                if layer.parts == 1:
                    module.op(layer.name).attrs["phase"] = number
                else:
                    column_phases.setdefault(layer.name, []).extend(
                        [number] * len(layer.column_blocks))
        for name, phases in column_phases.items():
            module.op(name).attrs["column_phases"] = phases
