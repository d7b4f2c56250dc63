"""The timing model: cycles, throughput and energy of a scheduled module without
running its program.

The simulator interprets every instruction of every core (hundreds of thousands
for a 224x224 ResNet); this model walks the plan's tasks instead (one output row
of one group, cimc/analysis/plan.py) in the order every core runs them, and the
output pixels within a matvec row, charging each instruction the code generator
writes what the simulator charges it (cimc.isa.simulator.timing
`instruction_cost`), and modelling the waits that decide the time on a chip:

* a core runs its tasks in the plan's order, one at a time;
* a task's band refresh waits for the input rows it receives (the producer's
  send plus the network's hops and serialization) or loads (the shared global
  memory channel);
* a matvec row's pixel loop is software pipelined as the code generator writes
  it: per pixel the window is gathered and the MVMs issued (each waits until its
  crossbars are free), then the previous pixel's partial sums are sent to the
  column's reducer (waiting for their MVMs) or, on the reducer, received, added,
  biased and requantized;
* the reducer sends the finished row to its consumers and stores model outputs.

Two shortcuts keep it fast and exact to itself: the middle pixels of a row do
the same work, so once a pixel leaves the state of the one before shifted in
time, the rest are skipped by that shift; and a matvec row that starts as an
earlier one did (the same relative clocks, crossbar and message times) ends as
it did, shifted.

What it leaves out: contention on mesh links (messages take the uncontended
route time) and the scalar instructions of the loops around tasks; so it
can be a little faster than the simulated run. `make bench` (bench/timing.py)
prints its error against the simulator on every bench model; the compile report
labels its figures as modelled (docs/backend.md, "Report").
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.analysis.gather import geometry
from cimc.analysis.plan import Group, Plan, Recv
from cimc.analysis.traffic import column_ranges
from cimc.analysis.window import BandStep, Window, band_plan, transient
from cimc.dialect.chip import (
    CHUNK,
    block_shape,
    blocks_of,
    image_dims,
    lut_table,
    pixel_runs,
    rescale_clamps,
    runtime_operands,
)
from cimc.dialect.host import chip_stores
from cimc.ir.module import Module
from cimc.isa.image import CrossbarGroup, Slice
from cimc.isa.simulator.timing import Cost, energy_pj, instruction_cost
from cimc.isa.table import BY_MNEMONIC
from cimc.targets import Target


@dataclass
class Timing:
    """What the model gives: the run's cycles (the latest core's finish), each core's
    finish, and the run's event counts (named as the simulator's, cimc.isa.simulator.timing
    EVENTS) for its energy."""

    cycles: int
    finish: dict[int, int]
    events: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Per core, the cycles its own instructions take (waiting left out): no schedule can
    # run the program's tasks on that core in less.
    busy: dict[int, int] = field(default_factory=dict)
    # The same per (core, plan group index): what each group's tasks cost a core.
    work: dict[tuple[int, int], int] = field(default_factory=dict)

    def energy_nj(self, target: Target) -> dict[str, float]:
        """Energy by component and in total, nJ, as the simulator's report computes it."""
        pj = energy_pj(self.events, target)
        nj = {name: value / 1000.0 for name, value in pj.items()}
        nj["total"] = sum(pj.values()) / 1000.0
        return nj


@dataclass(frozen=True)
class _Mvm:
    """One MVM a part issues per pixel: its column block and what the simulator charges
    it (its crossbars, events and MVM time)."""

    column: int
    cost: Cost


@dataclass
class _Part:
    """What one core does for one matvec group, per pixel."""

    core: int
    gather: list[int]  # bytes of each window copy
    mvms: list[_Mvm]
    psum_sends: list[tuple[int, int, int]]  # (column, reducer core, bytes)
    reduced: list[tuple[int, list[int]]]  # (column, cores sending it partial sums)
    crossbar_keys: list[tuple[int, int]] = field(init=False)  # (core, crossbar) it uses
    costs: Any = None  # the model's per-pixel costs (_Model._pixel_costs)

    def __post_init__(self) -> None:
        self.crossbar_keys = sorted({(self.core, x) for mvm in self.mvms
                                     for x in mvm.cost.crossbars})


@dataclass
class _RowOutcome:
    """How a matvec row ended, relative to its first core's clock at its start."""

    clocks: list[int]  # per core of the group
    free: list[int]  # per (core, crossbar) of its parts, in `_Part.crossbar_keys` order
    arrivals: list[int]  # of the messages it ends with, in `_row_sends` order
    events: list[tuple[str, int]]
    busy: list[int]  # per core of the group


class _Model:
    def __init__(self, module: Module, target: Target, plan: Plan) -> None:
        self.module, self.target, self.plan = module, target, plan
        lat = target.latency
        self.scalar = max(1, lat.scalar)
        self.clock: dict[int, int] = defaultdict(int)
        self.busy: dict[int, int] = defaultdict(int)
        self.work: dict[tuple[int, int], int] = defaultdict(int)
        self.crossbar_free: dict[tuple[int, int], int] = defaultdict(int)
        # Busy intervals of the global-memory channel, sorted: tasks are modelled in the
        # plan's order, not in time order, so an access fits into the first gap after it.
        self.global_busy: list[tuple[int, int]] = []
        self.events: dict[str, int] = defaultdict(int)
        self.arrival: dict[tuple[int, int, int], int] = {}  # (tag, image, row) -> cycle
        self.started: set[tuple[int, int]] = set()  # (group, core) whose band is filled
        self.parts: dict[int, list[_Part]] = {}
        self.bands: dict[int, dict[int, BandStep]] = {}
        self.rows: dict[tuple, _RowOutcome] = {}  # matvec rows by `_row_key`
        self.costs: dict[tuple[str, int, tuple[tuple[str, int], ...]], Cost] = {}

    # -- single instructions, at the simulator's own cost (cimc.isa.simulator.timing) ------

    def cost(self, mnemonic: str, on: int = 0, **fields: int) -> Cost:
        """What the simulator charges one `mnemonic` with these operand fields (the others
        do not change its cost) on core `on`; i8 and u8 forms cost the same."""
        key = (mnemonic, on, tuple(sorted(fields.items())))
        found = self.costs.get(key)
        if found is None:
            spec = BY_MNEMONIC[mnemonic]
            operands = tuple(fields.get(f.name, 0) for f in spec.fields)
            found = self.costs[key] = instruction_cost(spec, operands, self.target, {}, on)
        return found

    def charge(self, core: int, cost: Cost, count: int = 1) -> None:
        """`count` instructions of `cost` on `core`, one after the other, without waiting."""
        self.clock[core] += count * cost.cycles
        self.busy[core] += count * cost.cycles
        for name, amount in cost.events.items():
            self.events[name] += count * amount

    def scalars(self, core: int, count: int) -> None:
        self.charge(core, self.cost("addi"), count)

    def copy(self, core: int, nbytes: int) -> None:
        self.charge(core, self.cost("copy", len=nbytes, reps=1))

    def fill(self, core: int, nbytes: int) -> None:
        self.charge(core, self.cost("fill", len=nbytes))

    def global_access(self, core: int, nbytes: int) -> None:
        """ld / st: the chip's one global-memory channel."""
        cost = self.cost("ld", len=nbytes)
        busy = self.global_busy
        start = self.clock[core]
        k = bisect.bisect_right(busy, (start, math.inf))
        if k and busy[k - 1][1] > start:
            start = busy[k - 1][1]
        while k < len(busy) and busy[k][0] < start + cost.cycles:
            start = max(start, busy[k][1])
            k += 1
        busy.insert(k, (start, start + cost.cycles))
        self.clock[core] = start
        self.charge(core, cost)

    def send(self, core: int, dest: int, nbytes: int, ready: int = 0) -> int:
        """A send once its data is `ready`; the message's arrival cycle, uncontended
        (cimc/isa/simulator/network.py: the hops, then serialization)."""
        self.clock[core] = max(self.clock[core], ready)
        self.charge(core, self.cost("send", on=core, core=dest, len=nbytes))
        target = self.target
        return (self.clock[core] + target.hops(core, dest) * target.hop_latency
                + math.ceil(nbytes / target.link_bytes_per_cycle))

    def recv(self, core: int, arrival: int, nbytes: int) -> None:
        self.clock[core] = max(self.clock[core], arrival)
        self.charge(core, self.cost("recv", len=nbytes))

    # -- receiving rows ------------------------------------------------------------------

    def receive(self, core: int, image: int, value: str, pieces: list[Recv], stride: int,
                offset: int) -> None:
        """Pieces of input rows into a row of pixel stride `stride` (cimc.codegen `_receive`)."""
        _, w, c = image_dims(self.module.values[value])
        for p in pieces:
            if p.core is None:
                self.global_access(core, w * c)
                if not (stride == c and offset == 0):
                    self.copy(core, c * w)
                continue
            size = w * (p.hi - p.lo)
            self.recv(core, self.arrival.get((p.tag, image, p.iy), 0), size)
            if not (p.hi - p.lo == stride and offset == 0):
                self.copy(core, size)

    def band(self, g: Group, core: int, image: int, t: int, win: Window, step: BandStep
             ) -> None:
        if (id(g), core) not in self.started:  # the band's padding, once per program
            self.started.add((id(g), core))
            if not self._transient(g):  # (a scratch band has none)
                self.fill(core, win.band_bytes)
                # Not the work of an inference: a core's `work` is per streamed image.
                self.busy[core] -= self.cost("fill", len=win.band_bytes).cycles
        rb = win.wp * win.c
        if step.kept and step.moved:
            received = [(p.lo, p.hi) for rows in g.recvs[core][0] for p in rows]
            lo = min((a for a, _ in received), default=0)
            hi = max((b for _, b in received), default=win.c)
            kept = step.kept
            self.copy(core, rb * kept if (lo, hi) == (0, win.c) else (hi - lo) * kept * win.wp)
        pieces = g.recvs[core][0][t]
        for _, iy in step.fills:
            if iy is None:
                self.fill(core, win.w * win.c)
            else:
                self.receive(core, image, g.op.inputs[0], [p for p in pieces if p.iy == iy],
                             win.c, 0)

    def finish(self, g: Group, core: int, image: int, oy: int, columns: list[int]) -> None:
        """Send the row's reduced columns to their consumers; store model outputs."""
        module = self.module
        _, ow, n = image_dims(module.values[g.op.outputs[0]])
        ranges = column_ranges(module, g.op)
        output = chip_stores(module, g.op.outputs[0])
        for j in columns:
            lo, hi = ranges[j]
            whole = hi - lo == n
            dests = g.sends.get(j, {}).get(oy, [])
            if dests and not whole:
                self.copy(core, (hi - lo) * ow)
            for dest, tag in dests:
                self.arrival[(tag, image, oy)] = self.send(core, dest, ow * (hi - lo))
            if output:
                for nbytes in ([ow * (hi - lo)] if whole or ow == 1 else [hi - lo] * ow):
                    self.global_access(core, nbytes)

    # -- tasks ---------------------------------------------------------------------------

    def task(self, image: int, gi: int, oy: int) -> None:
        g = self.plan.groups[gi]
        t = g.rows.index(oy)
        kind = g.op.kind
        before = [self.busy[core] for core in g.cores]
        if kind == "matvec":
            self.matvec_row(gi, g, image, t, oy)
        elif kind == "pool":
            self.pool_row(g, image, t, oy)
        else:
            self.vector_row(g, image, t, oy)
        for core, busy in zip(g.cores, before, strict=True):
            self.work[(core, gi)] += self.busy[core] - busy

    def _window(self, g: Group) -> tuple[Window, dict[int, BandStep]]:
        key = id(g)
        if key not in self.bands:
            win = Window.of(self.module, g.op)
            self.bands[key] = {s.oy: s for s in band_plan(win, g.rows)}
        return Window.of(self.module, g.op), self.bands[key]

    def _transient(self, g: Group) -> bool:
        """Whether `g`'s band is scratch, refreshed whole every row (no padding fill)."""
        win, steps = self._window(g)
        return transient(win, list(steps.values()))

    def _parts(self, gi: int, g: Group) -> list[_Part]:
        if gi in self.parts:
            return self.parts[gi]
        module, op = self.module, g.op
        s, flat = op.attrs["slices"], op.attrs["block_slices"]
        blocks = blocks_of(op)
        ranges = column_ranges(module, op)
        win = Window.of(module, op)
        k_rows = module.values[op.inputs[1]].shape[0]
        rows = op.attrs["block_rows"]
        by_core: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for b, (i, j) in enumerate(blocks):
            k = g.replica * len(blocks) + b
            by_core[int(op.attrs["block_cores"][k])].append((i, j, k))
        parts = []
        for core in g.cores:
            mine = by_core[core]
            mvms, seen = [], set()
            for j in sorted({j for _, j, _ in mine}):
                for i, jj, k in mine:
                    if jj != j:
                        continue
                    r, c = block_shape(module, op, i, j)
                    group = CrossbarGroup(self.target.weight_bits, r.stop - r.start,
                                          c.stop - c.start,
                                          tuple(Slice(int(flat[2 * (k * s + d)]), 0,
                                                      int(flat[2 * (k * s + d) + 1]))
                                                for d in range(s)))
                    spec = BY_MNEMONIC["mvm.acc.i8" if j in seen else "mvm.i8"]
                    mvms.append(_Mvm(j, instruction_cost(spec, (0,) * len(spec.fields),
                                                         self.target, {0: group}, core)))
                    seen.add(j)
            needed = (min(i * rows for i, _, _ in mine),
                      max(min(k_rows, (i + 1) * rows) for i, _, _ in mine))
            gather = [] if win.contiguous else win.gather_sizes(needed)
            sends = [(j, g.reducers[j], 4 * (ranges[j][1] - ranges[j][0]))
                     for j in sorted({j for _, j, _ in mine}) if g.reducers[j] != core]
            reduced = []
            for j in sorted(jj for jj, c in g.reducers.items() if c == core):
                senders = sorted({int(op.attrs["block_cores"][g.replica * len(blocks) + b])
                                  for b, (_, jj) in enumerate(blocks) if jj == j} - {core})
                reduced.append((j, senders))
            parts.append(_Part(core, gather, mvms, sends, reduced))
        self.parts[gi] = parts
        return parts

    def matvec_row(self, gi: int, g: Group, image: int, t: int, oy: int) -> None:
        """One row of a matvec group on its cores; a row that starts as an earlier one did
        (up to a shift in time) ends as it did, shifted (`_row_key`)."""
        key = self._row_key(gi, g, image, t, oy)
        if key is not None and key in self.rows:
            self._replay(gi, g, image, oy, self.rows[key])
            return
        if key is None:
            self._matvec_row(gi, g, image, t, oy)
            return
        base = self.clock[g.cores[0]]
        events, busy = dict(self.events), {core: self.busy[core] for core in g.cores}
        self._matvec_row(gi, g, image, t, oy)
        parts = self._parts(gi, g)
        self.rows[key] = _RowOutcome(
            [self.clock[core] - base for core in g.cores],
            [self.crossbar_free[k] - base for part in parts for k in part.crossbar_keys],
            [self.arrival[(tag, image, oy)] - base for _, tag in self._row_sends(g, oy)],
            [(name, count - events.get(name, 0)) for name, count in self.events.items()
             if count != events.get(name, 0)],
            [self.busy[core] - busy[core] for core in g.cores])

    def _row_sends(self, g: Group, oy: int) -> list[tuple[int, int]]:
        """(destination, tag) of the messages a matvec row ends with, in `finish` order."""
        return [dest for core in g.cores for j, c in sorted(g.reducers.items()) if c == core
                for dest in g.sends.get(j, {}).get(oy, [])]

    def _row_key(self, gi: int, g: Group, image: int, t: int, oy: int) -> tuple | None:
        """What decides a matvec row's timing, relative to its first core's clock: the
        cores' clocks, their crossbars' busy time left, how long each received row is
        still to come, the band step and the messages it ends with. None for a row that
        loads or stores global memory (the shared channel is not relative)."""
        if chip_stores(self.module, g.op.outputs[0]):
            return None
        win, steps = self._window(g)
        step = steps[oy]
        base = self.clock[g.cores[0]]
        key: list[object] = [gi, step.kept, step.moved,
                             tuple(iy is None for _, iy in step.fills)]
        for part in self._parts(gi, g):
            core = part.core
            clock = self.clock[core]
            key.append(((id(g), core) in self.started, clock - base))
            key.append(tuple(max(self.crossbar_free[k] - clock, 0) for k in part.crossbar_keys))
            pieces = []
            for p in g.recvs[core][0][t]:
                if p.core is None:
                    return None
                arrival = self.arrival.get((p.tag, image, p.iy), 0)
                pieces.append((p.core, p.lo, p.hi, max(arrival - clock, 0)))
            key.append(tuple(pieces))
        key.append(tuple(dest for dest, _ in self._row_sends(g, oy)))
        return tuple(key)

    def _replay(self, gi: int, g: Group, image: int, oy: int, outcome: _RowOutcome) -> None:
        base = self.clock[g.cores[0]]
        for core in g.cores:
            self.started.add((id(g), core))
        for core, end, busy in zip(g.cores, outcome.clocks, outcome.busy, strict=True):
            self.clock[core] = base + end
            self.busy[core] += busy
        keys = [k for part in self._parts(gi, g)
                for k in part.crossbar_keys]
        for k, free in zip(keys, outcome.free, strict=True):
            self.crossbar_free[k] = base + free
        for (_, tag), arrival in zip(self._row_sends(g, oy), outcome.arrivals, strict=True):
            self.arrival[(tag, image, oy)] = base + arrival
        for name, count in outcome.events:
            self.events[name] += count

    def _matvec_row(self, gi: int, g: Group, image: int, t: int, oy: int) -> None:
        win, steps = self._window(g)
        for core in g.cores:
            self.band(g, core, image, t, win, steps[oy])
        parts = self._parts(gi, g)
        ow = win.ow
        ranges = column_ranges(self.module, g.op)
        lut = lut_table(self.module, g.op) is not None
        # ready[core][column]: when the partial sums of the last issued pixel are done.
        previous: dict[int, dict[int, int]] = {}
        psums: dict[tuple[int, int], int] = {}  # (column, sender) -> arrival, last pixel
        last: tuple[list[int], dict[str, int], dict[int, int]] | None = None
        k = 0
        while k <= ow:
            current: dict[int, dict[int, int]] = {}
            for part in parts:  # issue pixel k, send pixel k - 1's partial sums
                core = part.core
                if k < ow:
                    self.scalars(core, 4 if k == 0 else 3)
                    ready = self._issue(part)
                    current[core] = ready
                    if k == 0 and ow > 1:
                        self.scalars(core, 2)
                else:
                    self.scalars(core, 1)
                if k:
                    for j, dest, nbytes in part.psum_sends:
                        psums[(j, core)] = self.send(core, dest, nbytes, previous[core][j])
            for part in parts:  # receive and reduce pixel k - 1
                core = part.core
                if k:
                    for j, senders in part.reduced:
                        n = ranges[j][1] - ranges[j][0]
                        own = previous[core].get(j, 0)
                        for other in senders:
                            self.recv(core, psums[(j, other)], 4 * n)
                            self.clock[core] = max(self.clock[core], own)
                            self.charge(core, self.cost("vadd.i32", n=n))
                        self.clock[core] = max(self.clock[core], own)
                        self.charge(core, self.cost("vadd.i32", n=n))
                        self.charge(core, self.cost("requant.i8", n=n))
                        if lut:
                            self.charge(core, self.cost("vlut.i8", n=n))
                if 0 < k < ow:
                    self.scalars(core, 3)
            previous = current
            if 0 < k < ow - 1:
                # The pixels between the first and the last do the same work, and waiting is
                # a max of sums: once one pixel's state is the previous one's shifted by D
                # cycles, every later one is shifted by D again. Jump to the last pixel.
                state = self._state(parts, previous)
                if last is not None and self._steady(last[0], state):
                    self._advance(parts, previous, state[0] - last[0][0], ow - 1 - k,
                                  last[1], last[2])
                    k = ow - 1
                last = (state, dict(self.events), dict(self.busy))
            k += 1
        for part in parts:
            self.finish(g, part.core, image, oy, [j for j, _ in part.reduced])

    def _state(self, parts: list[_Part], ready: dict[int, dict[int, int]]) -> list[int]:
        """The times a pixel of a matvec row leaves for the next: per part its clock, its
        crossbars' free times and its partial sums' ready times."""
        state = []
        for part in parts:
            state.append(self.clock[part.core])
            state.extend(self.crossbar_free[key] for key in part.crossbar_keys)
            state.extend(ready[part.core].values())
        return state

    @staticmethod
    def _steady(before: list[int], after: list[int]) -> bool:
        shift = after[0] - before[0]
        return all(b - a == shift for a, b in zip(before, after, strict=True))

    def _advance(self, parts: list[_Part], ready: dict[int, dict[int, int]], shift: int,
                 pixels: int, events_before: dict[str, int], busy_before: dict[int, int]
                 ) -> None:
        """Skip `pixels` steady pixels: every time moves by `shift` per pixel, every event
        count and busy time by what the last pixel added."""
        delta = shift * pixels
        for part in parts:
            self.clock[part.core] += delta
            self.busy[part.core] += pixels * (self.busy[part.core] - busy_before[part.core])
            for key in part.crossbar_keys:
                self.crossbar_free[key] += delta
            for column in ready[part.core]:
                ready[part.core][column] += delta
        for name, count in list(self.events.items()):
            self.events[name] = count + pixels * (count - events_before.get(name, 0))

    def _issue(self, part: _Part) -> dict[int, int]:
        """Gather the window and issue the MVMs of one pixel; when each column's partial
        sums are ready. (The hottest loop of the model: the work of a pixel is fixed, so
        its costs and events are summed once per part, in `_pixel_costs`.)"""
        gather, mvms, events = self._pixel_costs(part)
        clock = self.clock[part.core] + gather
        free = self.crossbar_free
        scalar = self.scalar
        ready: dict[int, int] = {}
        for column, keys, cycles in mvms:
            start = clock
            for key in keys:
                if free[key] > start:
                    start = free[key]
            end = start + cycles
            for key in keys:
                free[key] = end
            ready[column] = end
            clock = start + scalar
        self.clock[part.core] = clock
        self.busy[part.core] += gather + scalar * len(mvms)
        for name, count in events:
            self.events[name] += count
        return ready

    def _pixel_costs(self, part: _Part) -> tuple[
            int, list[tuple[int, list[tuple[int, int]], int]], list[tuple[str, int]]]:
        """(gather cycles, per MVM its column, (core, crossbar) keys and MVM time, the
        events of one pixel's gather and MVMs) of a part."""
        if part.costs is None:
            copies = [self.cost("copy", len=nbytes, reps=1) for nbytes in part.gather]
            events: dict[str, int] = defaultdict(int)
            for cost in [*copies, *(mvm.cost for mvm in part.mvms)]:
                for name, amount in cost.events.items():
                    events[name] += amount
            part.costs = (sum(cost.cycles for cost in copies),
                          [(mvm.column, [(part.core, x) for x in mvm.cost.crossbars],
                            mvm.cost.cycles) for mvm in part.mvms],
                          sorted(events.items()))
        return part.costs

    def pool_row(self, g: Group, image: int, t: int, oy: int) -> None:
        win, steps = self._window(g)
        core = g.cores[0]
        self.band(g, core, image, t, win, steps[oy])
        a = g.op.attrs
        xt = self.module.values[g.op.inputs[0]].dtype
        info = np.iinfo(np.int8 if xt == "i8" else np.uint8)
        count, c = win.kh * win.kw, win.c
        gather = [] if win.contiguous else win.gather_sizes()
        # a pixel loop per run of equal divisors (cimc.codegen: windows at the edges)
        self.scalars(core, 4 * len(pixel_runs(a.get("col_extents", [0]))))
        for _ in range(win.ow):
            for nbytes in gather:
                self.copy(core, nbytes)
            if a["mode"] == "max":
                self.charge(core, self.cost("vredmax.i8", n=c, count=count))
                if a["lo"] > info.min:
                    self.charge(core, self.cost("vmaxi.i8", n=c))
                if a["hi"] < info.max:
                    self.charge(core, self.cost("vmini.i8", n=c))
            else:
                self.charge(core, self.cost("vredsum.i8", n=c, count=count))
                self.charge(core, self.cost("vaddi.i32", n=c))
                self.charge(core, self.cost("requant.i8", n=c))
            if lut_table(self.module, g.op) is not None:
                self.charge(core, self.cost("vlut.i8", n=c))
            self.scalars(core, 4)
        self.finish(g, core, image, oy, [0])

    def gather_row(self, g: Group, image: int, t: int, oy: int) -> None:
        """A gather's row as cimc.codegen writes it: band moves, receives, the vgather."""
        op, core = g.op, g.cores[0]
        geo = geometry(self.module, op)
        step = next(s for s in geo.steps if s.oy == oy)
        for k, part in enumerate(step.operands):
            _, w, c = geo.sizes[k]
            if part.kept and part.moved:
                self.copy(core, part.kept * w * c)
            pieces = g.recvs[core][k][t]
            for _, iy in part.fills:
                self.receive(core, image, op.inputs[k], [p for p in pieces if p.iy == iy], c, 0)
        _, ow, n = image_dims(self.module.values[op.outputs[0]])
        if step.table < 0:
            self.fill(core, ow * n)
        else:
            self.charge(core, self.cost("vgather.i8", n=ow * n))
        self.finish(g, core, image, oy, [0])

    def vector_row(self, g: Group, image: int, t: int, oy: int) -> None:
        op, module = g.op, self.module
        core = g.cores[0]
        _, ow, n = image_dims(module.values[op.outputs[0]])
        recvs = g.recvs[core]
        total = ow * n
        if op.kind == "gather":
            self.gather_row(g, image, t, oy)
            return
        if op.kind == "join":
            offsets = np.cumsum([0, *(image_dims(module.values[v])[2]
                                      for v in op.inputs)]).tolist()
            for k, value in enumerate(op.inputs):
                self.receive(core, image, value, recvs[k][t], n, int(offsets[k]))
        elif op.kind == "scale":  # a loop over the row's pixels
            self.receive(core, image, op.inputs[0], recvs[0][t], n, 0)
            self.scalars(core, 4)
            self.charge(core, self.cost("vscale.i8", n=n), ow)
            self.charge(core, self.cost("vmul.i32", n=n), ow)
            if op.attrs.get("offsets"):
                self.charge(core, self.cost("vadd.i32", n=n), ow)
            self.charge(core, self.cost("requant.i8", n=n), ow)
            if lut_table(module, op) is not None:
                self.charge(core, self.cost("vlut.i8", n=n), ow)
            self.scalars(core, 4 * ow)
        elif op.kind == "pixel_softmax":  # cimc.codegen `_softmax_setup`
            self.receive(core, image, op.inputs[0], recvs[0][t], n, 0)
            self.scalars(core, 4)
            per_pixel = [self.cost("vredmax.u8", n=1, count=n),
                         self.cost("copy", len=1, reps=n), self.cost("vsub.u8", n=n),
                         self.cost("vlut.u8", n=n), self.cost("vlut.u8", n=n),
                         self.cost("vscale.u8", n=n), self.cost("vscale.u8", n=n),
                         self.cost("vadd.i32", n=n), self.cost("vredsum.i32", n=1, count=n),
                         self.cost("vshl.i32", n=1), self.cost("copy", len=4, reps=n),
                         self.cost("vmul.i32", n=n), self.cost("vdiv.i32", n=n),
                         self.cost("requant.i8", n=n)]
            if module.values[op.inputs[0]].dtype == "i8":
                per_pixel.append(self.cost("vlut.u8", n=n))
            for cost in per_pixel:
                self.charge(core, cost, ow)
            self.scalars(core, 4 * ow)
        elif op.kind == "pixel_layernorm":  # cimc.codegen `_layernorm_setup`
            self.receive(core, image, op.inputs[0], recvs[0][t], n, 0)
            self.scalars(core, 4)
            a = op.attrs
            per_pixel = [self.cost("vscale.u8", n=n), self.cost("vredsum.i32", n=1, count=n),
                         self.cost("vmul.i32", n=n), self.cost("vredsum.i32", n=1, count=n),
                         self.cost("vmul.i32", n=1), self.cost("vmul.i32", n=1),
                         self.cost("vsub.i32", n=1), self.cost("vmaxi.i32", n=1),
                         self.cost("visqrt.i32", n=1), self.cost("copy", len=4, reps=n),
                         self.cost("vscale.u8", n=n), self.cost("vsub.i32", n=n),
                         self.cost("copy", len=4, reps=n), self.cost("vmul.i32", n=n),
                         self.cost("vadd.i32", n=n), self.cost("requant.i8", n=n)]
            per_pixel += [self.cost("vshl.i32", n=1)] * bool(a["m"])
            per_pixel += [self.cost("vaddi.i32", n=1)] * bool(a["e"])
            per_pixel += [self.cost("vshr.i32", n=n)] * bool(a["a"])
            for cost in per_pixel:
                self.charge(core, cost, ow)
            self.scalars(core, 4 * ow)
        elif op.kind == "dot":  # cimc.codegen `_dot_setup`
            for k, value in enumerate(op.inputs):
                self.receive(core, image, value, recvs[k][t], image_dims(
                    module.values[value])[2], 0)
            _, pixels_b, channels_b = image_dims(module.values[op.inputs[1]])
            depth = image_dims(module.values[op.inputs[0]])[2]
            self.charge(core, self.cost("vscale.i8", n=pixels_b * channels_b))
            if not op.attrs["rows"]:
                self.charge(core, self.cost("copy", len=4, reps=depth), n)
            self.scalars(core, 4)
            self.charge(core, self.cost("vscale.i8", n=depth), ow)
            self.scalars(core, 3 * ow)
            self.charge(core, self.cost("vmul.i32", n=depth), ow * n)
            self.charge(core, self.cost("vredsum.i32", n=1, count=depth), ow * n)
            self.scalars(core, 4 * ow * n)
            self.charge(core, self.cost("requant.i8", n=n), ow)
            self.scalars(core, 4 * ow)
        elif op.kind == "product" and len({image_dims(module.values[v])[1:]
                                           for v in op.inputs[:2]}) > 1:
            # cimc.codegen `_product_setup`: a loop over the row's pixels
            dims = [image_dims(module.values[v]) for v in op.inputs[:2]]
            for k, value in enumerate(op.inputs[:2]):
                self.receive(core, image, value, recvs[k][t], dims[k][2], 0)
            moving = [d[1] == ow and ow > 1 for d in dims]
            for k, d in enumerate(dims):
                count = ow if moving[k] else 1
                if d[2] == 1 < n:
                    self.charge(core, self.cost("copy", len=1, reps=n), count)
                self.charge(core, self.cost("vscale.i8", n=n), count)
            self.scalars(core, 3 + sum(moving))
            self.charge(core, self.cost("vmul.i32", n=n), ow)
            self.charge(core, self.cost("requant.i8", n=n), ow)
            if lut_table(module, op) is not None:
                self.charge(core, self.cost("vlut.i8", n=n), ow)
            self.scalars(core, (3 + sum(moving)) * ow)
        else:
            for k, value in enumerate(runtime_operands(module, op)):
                self.receive(core, image, value, recvs[k][t], n, 0)
            pointers = 3 if op.kind in ("eltwise", "product") else 2
            lut = lut_table(module, op) is not None
            full, rest = divmod(total, CHUNK)
            self.scalars(core, pointers)
            if full > 1:
                self.scalars(core, 2)
            # Whole chunks charged at once: charging waits for nothing, so the order and
            # grouping of these integer sums do not change them.
            for size, count in ((CHUNK, full), (rest, 1 if rest else 0)):
                if not count:
                    continue
                if op.kind in ("eltwise", "product"):
                    self.charge(core, self.cost("vscale.i8", n=size), 2 * count)
                    self.charge(core, self.cost("vadd.i32" if op.kind == "eltwise" else
                                                "vmul.i32", n=size), count)
                    self.charge(core, self.cost("requant.i8", n=size), count)
                elif op.attrs["M"]:
                    self.charge(core, self.cost("vscale.i8", n=size), count)
                    self.charge(core, self.cost("requant.i8", n=size), count)
                elif not lut or rescale_clamps(module, op):
                    self.charge(core, self.cost("vmaxi.i8", n=size), count)
                    self.charge(core, self.cost("vmini.i8", n=size), count)
                if lut:
                    self.charge(core, self.cost("vlut.i8", n=size), count)
                if size == CHUNK:
                    self.scalars(core, (pointers + (2 if full > 1 else 0)) * count)
        self.finish(g, core, image, oy, [0])


def model(module: Module, target: Target, plan: Plan) -> Timing:
    """The modelled run of one program of `module` (placed and scheduled with `plan`)."""
    timing = _Model(module, target, plan)
    order = sorted({task for tasks in plan.order.values() for task in tasks},
                   key=lambda task: (task[0] * plan.period + plan.groups[task[1]].start[task[2]],
                                     task[1], task[2], task[0]))
    for image, gi, oy in order:
        timing.task(image, gi, oy)
    finish = {core: timing.clock[core] for core in sorted(plan.order)}
    for (core, _), free in timing.crossbar_free.items():
        finish[core] = max(finish.get(core, 0), free)
    return Timing(max(finish.values(), default=0), finish, timing.events, dict(timing.busy),
                  dict(timing.work))
