"""One core of the machine: registers, local memory, crossbar groups, decoded stream.

Decoding checks each instruction once (known mnemonic, operand count, branch
targets inside the stream, existing cores and crossbar groups) and fixes its
semantic function and static cost, so the interpreter loop only dispatches.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cimc.diagnostics import CimcError
from cimc.isa.image import Image
from cimc.isa.program import Instruction
from cimc.isa.simulator.blocks import UNSEEN
from cimc.isa.simulator.crossbar import Analog, conductance
from cimc.isa.simulator.matrix import GroupState
from cimc.isa.simulator.memory import Memory
from cimc.isa.simulator.registry import Semantic, base_name, lookup
from cimc.isa.simulator.reprogram import group_planes
from cimc.isa.simulator.timing import Cost, instruction_cost
from cimc.isa.table import BY_MNEMONIC
from cimc.targets import Target


class Chip(Protocol):
    """What a core reads of the machine it is part of (machine.py `Machine`, which builds
    its cores): the target, the crossbar image, the batch and the crossbars' analog
    model. The semantics of instructions that involve other cores (sync, ld/st,
    send/recv) call that machine as `core.machine`."""

    @property
    def target(self) -> Target: ...
    @property
    def image(self) -> Image | None: ...
    @property
    def batch(self) -> int: ...
    @property
    def analog(self) -> Analog: ...
    @property
    def bit_level(self) -> bool: ...

# Cost classes whose instructions must run in global time order.
ORDERED = frozenset({"send", "recv", "sync", "global", "program"})

# Operand positions (base register, offset, length) of the local memory an ordered
# instruction reads or writes.
_LOCAL_OPERAND = {"send": (1, 2, 3), "recv": (1, 2, 3), "ld": (0, 1, 4), "st": (2, 3, 4)}


def where(instruction: Instruction) -> str:
    """`mnemonic` at file:line, for messages."""
    at = f" at {instruction.loc}" if instruction.loc else ""
    return f"`{instruction.mnemonic}`{at}"


class Core:
    """One core: registers, local memory, crossbar groups, decoded stream, clock."""

    def __init__(self, number: int, machine: Chip, instructions: list[Instruction]):
        self.number = number
        self.machine = machine
        self.regs = [0] * 16
        self.pc = 0
        self.clock = 0
        self.halted = False
        self.blocked_since: int | None = None
        self.waiting_for = ""  # what a blocked core waits for, for the deadlock message
        self.pending_recv: tuple[int, int, int, int] | None = None  # source, addr, len, tag
        target = machine.target
        self.memory = Memory(f"core {number} local memory", target.local_memory_bytes,
                             machine.batch)
        self.groups: dict[int, GroupState] = {}
        # requant tables' bytes and the arrays worked out from them (vector.py requantize).
        self.requant_tables: dict[tuple[int, int, str], tuple[Any, ...]] = {}
        image = machine.image
        # Reprogramming (reprogram.py): the groups sharing cells with a group, found on its
        # first wprog; group -> (group, pc) of the wprog that overwrote it, for the error.
        self.overlaps: dict[int, tuple[int, ...]] = {}
        self.overwritten: dict[int, tuple[int, int]] = {}
        if image is not None and number in image.cores:
            core_image = image.cores[number]
            cells = core_image.cells
            # Conductances only for the bit-level path: as float64 they are 8x the cells
            # (8 MB a pimcomp core), whose allocation cost more than the exact path's MVMs.
            # (An ADC that cannot clip also takes the exact path, group by group; its
            # conductances are made all the same.)
            exact = machine.analog.ideal and not machine.bit_level
            planes = None if exact else conductance(cells, machine.analog, number)
            # The noise alone, for the groups of later phases (reprogram.group_planes).
            noise = (None if planes is None or not core_image.stored
                     else conductance(np.zeros_like(cells), machine.analog, number))
            phased = image.phases > 1  # crossbars start unprogrammed
            for gid, group in sorted(core_image.groups.items()):
                self.groups[gid] = GroupState(
                    group, core_image.group_digits(gid),
                    None if planes is None else group_planes(core_image, gid, planes, noise),
                    image.cell_bits, target.dac_bits, machine.analog, machine.bit_level,
                    programmed=not phased)
        # An implicit halt ends every stream, so running off the end stops the core.
        self.instructions = [*instructions, Instruction("halt", ())]
        self.has_code = bool(instructions)  # a section with only .data takes no part in sync
        self.handlers: list[Semantic] = []
        self.names: list[str] = []  # mnemonics without type suffix (registry.base_name)
        self.operands: list[tuple[int, ...]] = []
        self.elements: list[str | None] = []
        self.ordered: list[bool] = []
        self.costs: list[Cost] = []
        self._image_groups = {gid: state.group for gid, state in self.groups.items()}
        for instruction in self.instructions:
            self._decode(instruction)
        # An mvm occupies the core only to issue it; its crossbars stay busy for the MVM
        # time (Cost.cycles) while the core goes on (machine.py, matrix.py).
        self.mvm = [bool(cost.crossbars) for cost in self.costs]
        issue = max(1, target.latency.scalar)
        self.cycles = [issue if mvm else cost.cycles
                       for mvm, cost in zip(self.mvm, self.costs, strict=True)]
        self.crossbar_free: dict[int, int] = {}  # crossbar -> cycle its MVM ends
        # Where ordered instructions (ld, st, send, recv) touch local memory, as operand
        # positions (base register, offset, length), to wait for MVM results in flight.
        self.local_operand = [_LOCAL_OPERAND.get(i.mnemonic) for i in self.instructions]
        self.counts = [0] * len(self.instructions)
        # The translated block starting at each pc (blocks.py), translated on first entry.
        self.blocks: list[Any] = [UNSEEN] * len(self.instructions)

    def _decode(self, instruction: Instruction) -> None:
        spec = BY_MNEMONIC.get(instruction.mnemonic)
        if spec is None:
            raise self.error(f"unknown instruction '{instruction.mnemonic}'", instruction)
        if len(instruction.operands) != len(spec.fields):
            raise self.error(f"expects {len(spec.fields)} operand fields, got "
                             f"{len(instruction.operands)}", instruction)
        fields = dict(zip((f.name for f in spec.fields), instruction.operands, strict=True))
        if "target" in fields and not 0 <= fields["target"] < len(self.instructions) + 1:
            raise self.error(f"branch target {fields['target']} is outside the stream",
                             instruction)
        if "core" in fields and not 0 <= fields["core"] < self.machine.target.cores:
            raise self.error(f"core {fields['core']} does not exist on target "
                             f"'{self.machine.target.name}' ({self.machine.target.cores} "
                             f"cores)", instruction)
        if "g" in fields and fields["g"] not in self.groups:
            if self.machine.image is None:
                raise self.error("uses a crossbar group but the program has no crossbar "
                                 "image (.image directive)", instruction)
            known = ", ".join(map(str, sorted(self.groups))) or "none"
            raise self.error(f"crossbar group {fields['g']} is not in the image for core "
                             f"{self.number} (its groups: {known})", instruction)
        if spec.cost == "program" and not self.machine.target.reprogrammable:
            raise self.error(f"target '{self.machine.target.name}' cannot rewrite its crossbars "
                             "(crossbar.reprogrammable = false)", instruction)
        self.handlers.append(lookup(spec))
        self.names.append(base_name(spec.mnemonic))
        self.operands.append(instruction.operands)
        self.elements.append(spec.suffix)
        self.ordered.append(spec.cost in ORDERED)
        self.costs.append(instruction_cost(spec, instruction.operands, self.machine.target,
                                           self._image_groups, self.number))

    def error(self, message: str, instruction: Instruction) -> CimcError:
        """A CimcError about `instruction` of this core, located at its source line."""
        return CimcError(f"core {self.number}: {where(instruction)}: {message}",
                         instruction.loc)

    def results_ready(self, pc: int) -> int:
        """The cycle at which the local memory ordered instruction `pc` touches holds no
        MVM result in flight (sync and halt: every result)."""
        memory = self.memory
        where = self.local_operand[pc]
        if where is None:
            ends = [r for _, _, r in memory.pending] + list(self.crossbar_free.values())
            return max(ends, default=0)
        o = self.operands[pc]
        return memory.ready_at(self.regs[o[where[0]]] + o[where[1]], o[where[2]])

    @property
    def busy(self) -> int:
        """Cycles spent executing (not waiting); an mvm counts its issue cycle."""
        return sum(c * n for c, n in zip(self.cycles, self.counts, strict=True))


