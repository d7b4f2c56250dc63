"""partition: split a module whose weights exceed the chip into phases.

A model whose crossbar blocks fit the target is one phase and is left exactly as it
is. Otherwise every chip op gets `phase = p`: phases are contiguous ranges of the
program order, each fitting the chip's crossbars, run one after another with the
crossbars reprogrammed in between (docs/backend.md, "partition"; the cost model and
both methods are cimc/analysis/phases.py). A matvec larger than the chip (`tile`
made one column of its blocks fit) is split by output channels: one matvec per phase
its column blocks run in, each writing its channels, and a `join` of their results
in the last of those phases. Options: `method` (`optimal`, the default: dynamic
programming over the cut points minimising the estimated time of a batch; `greedy`:
the next layer joins the current phase while it fits), `batch` (inferences per
batch: reprogramming is paid once per phase per batch) and `budget` (the replication
policy's crossbar fraction inside each phase, as `replicate`'s).

The pass refuses, naming it, a layer whose weights alone exceed the chip, and any
split on a target whose crossbars cannot be reprogrammed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from cimc.analysis.phases import METHODS, PhasePlan, partition
from cimc.diagnostics import CimcError
from cimc.dialect.chip import blocks_of
from cimc.ir.module import Module, Op
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
            split(module, module.op(name), phases)
        module.remove_dead()


def split(module: Module, op: Op, phases: list[int]) -> None:
    """Replace matvec `op`, whose column blocks run in `phases` (one per block, in
    order), by one matvec per phase computing those blocks' output channels, and a
    `join` of their results in the last phase."""
    x, *consts = op.inputs[:4]
    rest = op.inputs[4:]  # a lookup table applied to the result: the same for every piece
    weights, bias, table = (module.constants[v] for v in consts)
    width, n = op.attrs["block_cols"], weights.shape[1]
    result = module.values[op.outputs[0]]
    order = module.graph.nodes[op.name]["order"]
    pieces: list[Op] = []
    start = 0
    for phase, run in itertools.groupby(phases):
        count = len(list(run))
        lo, hi = start * width, min(n, (start + count) * width)
        name = f"{op.name}.part{len(pieces)}"
        names = [module.add_constant(module.fresh_name(f"{name}.{what}"),
                                     np.ascontiguousarray(data[..., lo:hi] if what ==
                                                          "weights" else data[lo:hi]))
                 for what, data in (("weights", weights), ("bias", bias),
                                    ("requant", table))]
        blocks = [v for i, j in blocks_of(op) if start <= j < start + count
                  for v in (i, j - start)]
        shape = list(result.shape)
        shape[1] = hi - lo
        pieces.append(module.add_op(
            "matvec", [x, *names, *rest], [result.with_shape(shape)], name=name,
            attrs={**op.attrs, "blocks": blocks, "phase": phase}))
        start += count
    join = module.add_op("join", [p.outputs[0] for p in pieces], [result],
                         name=f"{op.name}.join", attrs={"axis": 1, "phase": phases[-1]})
    for new in (*pieces, join):  # where the op was in the program order
        module.graph.nodes[new.name]["order"] = order
    module.replace_uses(op.outputs[0], join.outputs[0])
    module.remove_op(op)
