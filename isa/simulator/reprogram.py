"""Semantics of `wprog`: reprogramming a crossbar group from the off-chip weight store.

A model larger than the chip runs in phases whose groups share crossbar cells
(isa/image.py). Each core knows which of its groups hold their cells: in a
phased image none at the start, in a one-phase image all. `wprog g` makes g
hold its cells and every other group of the core sharing a cell with g lose
them; an `mvm` on a group that does not hold its cells is an error naming the
instruction and the group (not_programmed).

Time: wprog is ordered (it books the chip-wide weight channel in global time
order, as ld/st book the global-memory channel), so the machine starts it only
after the MVMs the core has in flight end: their crossbars may be rewritten.
Its packed cells take the channel from when both it and the core are free for
ceil(bytes / weight_bytes_per_cycle) cycles, then its rows are written; the
core waits for both (program_cycles; timing.py charges the sum). The channel is the chip's only
path to the weight store, separate from the ld/st channel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cimc.diagnostics import CimcError
from cimc.isa.image import CoreImage, CrossbarGroup
from cimc.isa.simulator.registry import semantic
from cimc.targets import Target


def program_cycles(group: CrossbarGroup, target: Target) -> tuple[int, int]:
    """wprog's time as (transfer, write) cycles: its packed cells cross the chip's weight
    channel, ceil(bytes / weight_bytes_per_cycle) (at least 1), then its rows are written
    one after another, ceil(rows_used x program_per_row) (the columns and slices of a row
    together)."""
    return program_time(group.cells, group.rows_used, target)


def program_time(cells: int, rows: int, target: Target) -> tuple[int, int]:
    """`program_cycles` of a group of `cells` cells on `rows` rows (the compile report's
    estimate of a phase's wprogs uses it too)."""
    transfer = max(1, math.ceil(-(-cells * target.cell_bits // 8)
                                / target.weight_bytes_per_cycle))
    return transfer, math.ceil(rows * target.latency.program_per_row)


@semantic("wprog", "g")
def wprog(core: Any, o: tuple[int, ...], t: Any) -> None:
    gid = o[0]
    machine = core.machine
    transfer, _ = program_cycles(core.groups[gid].group, machine.target)
    start = max(core.clock, machine.weight_free)
    machine.weight_free = start + transfer
    core.clock = start + core.cycles[core.pc]  # transfer + writing the rows
    program(core, gid)


def program(core: Any, gid: int) -> None:
    """Group `gid` of `core` holds its cells now; the groups sharing a cell with it do not."""
    overlaps = core.overlaps.get(gid)
    if overlaps is None:
        overlaps = core.overlaps[gid] = core.machine.image.cores[core.number].overlapping(gid)
    groups = core.groups
    for other in overlaps:
        if groups[other].programmed:
            groups[other].programmed = False
            core.overwritten[other] = (gid, core.pc)
    groups[gid].programmed = True
    core.overwritten.pop(gid, None)


def not_programmed(core: Any, gid: int) -> CimcError:
    """The error of an mvm (at core.pc) on group `gid`, which does not hold its cells."""
    instruction = core.instructions[core.pc]
    if gid in core.overwritten:
        by, pc = core.overwritten[gid]
        at = core.instructions[pc].loc
        why = (f"`wprog {by}` (instruction {pc}{f' at {at}' if at else ''}) overwrote its "
               f"cells; program it again with `wprog {gid}` before this mvm")
    else:
        why = (f"it was never programmed: the crossbar image has phases, so the crossbars "
               f"start unprogrammed; program it with `wprog {gid}` before this mvm")
    return core.error(f"crossbar group {gid} does not hold its weights: {why}", instruction)


def group_planes(image: CoreImage, gid: int, planes: np.ndarray,
                 noise: np.ndarray | None) -> np.ndarray:
    """The conductances of group `gid`'s cells: a phase-0 group's from `planes` (those of
    the core's cell array, crossbar.conductance), a later phase's group its own digits
    plus `noise` (conductance of an all-zero array: the noise alone) at the cells it is
    written to. The noise belongs to the device, so groups sharing a cell share it, and a
    group reads the same conductances in a phased image as alone in a one-phase one."""
    group = image.groups[gid]
    if gid not in image.stored:
        return group.digits(planes)
    assert noise is not None, "the noise is drawn for cores with groups of later phases"
    return image.stored[gid] + group.digits(noise)
