"""A module run in phases (passes/partition.py): each chip op's `phase`, and each phase
as a module of its own for the passes after `partition`.

A phase's module holds the phase's chip ops (the same Op objects as the whole
module, so what `replicate`, `place` and `schedule` write on them is written on the
whole module). A value it reads that an earlier phase made, or the host, comes from
a stand-in op of kind `global` with no operands: to the dataflow plan it is a tensor
in global memory, loaded like a model input, at the address (`addr`, and
`image_stride` between the images of a batch) of the op that made it. The values it
makes that a later phase or the host reads are its outputs, stored like a model's.
"""

from __future__ import annotations

from cimc.dialect.chip import CHIP_KINDS
from cimc.ir.module import Module, Op

# The kind of a phase module's stand-in for a tensor an earlier phase left in global
# memory (not a chip kind: the plan loads it).
GLOBAL = "global"


def phase_of(op: Op) -> int:
    """The phase a chip op runs in (0 in a module of one phase)."""
    return int(op.attrs.get("phase", 0))


def phase_count(module: Module) -> int:
    """How many phases the module's chip ops run in."""
    return 1 + max((phase_of(op) for op in module.ops() if op.kind in CHIP_KINDS), default=0)


def home(module: Module, value: str) -> Op | None:
    """The op whose `addr` a value is stored at: its producer, through views."""
    op = module.producer(value)
    while op is not None and op.kind == "view":
        op = module.producer(op.inputs[0])
    return op


def phase_modules(module: Module) -> list[Module]:
    """One module per phase, in order; [module] itself when it has one phase."""
    count = phase_count(module)
    if count == 1:
        return [module]
    members: list[list[Op]] = [[] for _ in range(count)]
    for op in module.ops():
        if op.kind in CHIP_KINDS:
            members[phase_of(op)].append(op)
    subs = []
    for number, ops in enumerate(members):
        made = {v for op in ops for v in op.outputs}
        stand_ins: dict[str, Op] = {}
        for op in ops:
            for value in op.inputs:
                if value in made or value in stand_ins or module.is_constant(value):
                    continue
                source = home(module, value)
                attrs: dict[str, object] = {} if source is None else {
                    key: source.attrs[key] for key in ("addr", "image_stride")
                    if key in source.attrs}
                stand_ins[value] = Op(f"{value}.{GLOBAL}", GLOBAL, [], [value], attrs)
        subs.append(module.restricted(ops, list(stand_ins.values()),
                                      f"{module.name}.phase{number}"))
    return subs
