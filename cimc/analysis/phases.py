"""Phases for a model larger than the chip: the cost of running a range of layers as one
phase, and the choice of phases (docs/backend.md, "partition").

A *phase* is a contiguous range of the module's chip ops in program (topological)
order whose weights fit the chip at once. A batch of B inferences runs phase by
phase: the crossbars are programmed with the phase's weights (paid once per batch),
the B inferences stream through the phase's pipeline, and the activations that cross
into a later phase are spilled to global memory and loaded back there.

Estimated time of a phase S at batch B, in cycles of the target's clock:

    program(S)  = max(weight bytes(S) / weight_bytes_per_cycle,
                      rows written(S) x program_per_row / cores used)
    fill(S)     = sum over layers of stage(layer) x kernel rows / output rows
                  (a layer starts once the rows it needs exist)
    period(S)   = max(the slowest stage, the layers' MVM and vector work / cores)
    spill(S)    = bytes S loads (inputs, earlier phases' results) and stores (outputs,
                  results later phases read) / global_bytes_per_cycle
    time(S, B)  = program(S) + fill(S) + B x (period(S) + spill(S))

where stage(layer) is a matvec's windows per copy x the MVM time (copies chosen
within the phase's spare crossbars by the replication policy, `choose_copies`) or a
vector op's element work. The run's time is the sum over phases; throughput is
B / time. `optimal` minimises it by dynamic programming over the cut points of the
order (every phase a contiguous range that fits); `greedy` is the baseline: the next
layer joins the current phase while the phase fits.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from cimc.diagnostics import CimcError
from cimc.dialect.chip import (
    CHIP_KINDS,
    block_shape,
    blocks_of,
    channel_too_big,
    image_dims,
    rounded_width,
    weight_key,
)
from cimc.ir.module import Module, Op
from cimc.targets import Target

METHODS = ("greedy", "optimal")


@dataclass(frozen=True)
class Layer:
    """What the phase model needs of one chip op, or of one piece of a matvec too large
    for the chip (a range of its column blocks: `part` of `parts`, `share` of its
    output channels)."""

    name: str
    kind: str
    reads: tuple[str, ...]  # runtime values it reads
    writes: str  # the value it produces
    columns: int = 0  # rounded cell columns of one copy of its blocks (placement's demand)
    crossbars: int = 0  # crossbars of one copy, as the replication policy counts them
    weight_bytes: int = 0  # packed cells of one copy
    rows_written: int = 0  # crossbar rows programmed for one copy (every slice's rows)
    blocks: int = 0  # crossbar blocks (MVMs per window)
    out_rows: int = 1  # output rows of the activation
    row_windows: int = 1  # windows (output pixels) per output row
    kernel_rows: int = 1  # input rows one output row needs
    vector_cycles: float = 0.0  # per inference, for ops on the vector unit
    part: int = 0
    parts: int = 1
    column_blocks: tuple[int, ...] = ()  # of a piece: its column blocks
    share: float = 1.0  # of a piece: the fraction of the output it writes
    block_demands: tuple[int, ...] = ()  # rounded cell columns of each block, in order
    block_keys: tuple[Hashable, ...] = ()  # what each block's cells hold (weight_key)
    block_cells: tuple[int, ...] = ()  # cells of each block (every slice)
    block_heights: tuple[int, ...] = ()  # crossbar rows each block writes (every slice)

    def programmed(self, held: set[Hashable], cell_bits: int) -> tuple[int, int]:
        """(weight bytes, crossbar rows) programming one copy writes, less the blocks
        whose weights a block in `held` (updated) already put on the chip."""
        new = [k for k, key in enumerate(self.block_keys) if key not in held]
        held.update(self.block_keys)
        if len(new) == len(self.block_keys):
            return self.weight_bytes, self.rows_written
        cells = sum(self.block_cells[k] for k in new)
        return -(-cells * cell_bits // 8), sum(self.block_heights[k] for k in new)


@dataclass(frozen=True)
class Phase:
    """One phase: layers [start, stop) of the order and its estimated figures."""

    start: int
    stop: int
    layers: tuple[str, ...]
    columns: int
    weight_bytes: int
    spill_bytes: int  # per inference, loaded and stored through global memory
    copies: dict[int, int] = field(hash=False, compare=False)  # matvec position -> copies
    program_cycles: float = 0.0
    fill_cycles: float = 0.0
    period_cycles: float = 0.0

    def cycles(self, batch: int, global_bytes_per_cycle: float) -> float:
        spill = self.spill_bytes / global_bytes_per_cycle
        return self.program_cycles + self.fill_cycles + batch * (self.period_cycles + spill)


@dataclass(frozen=True)
class PhasePlan:
    """The phases of a module and their estimated run time at `batch` inferences."""

    method: str
    batch: int
    phases: tuple[Phase, ...]
    layers: tuple[Layer, ...]  # the order the phases are ranges of
    cycles: float  # of the whole batch
    clock_mhz: float

    @property
    def throughput(self) -> float:
        """Estimated inferences per second."""
        return self.batch * self.clock_mhz * 1e6 / self.cycles if self.cycles else 0.0


def choose_copies(stages: Sequence[tuple[int, int, int]], limit: float) -> list[int]:
    """Copies per matvec given (output rows, windows per row, crossbars of one copy):
    repeatedly one more copy for the stage with the most windows per copy (ties: the
    earlier), while all copies fit `limit` crossbars, the layer has rows left to split
    and the copy makes that stage faster (docs/backend.md, "replicate")."""
    copies = [1] * len(stages)
    used = sum(c for _, _, c in stages)

    def windows(k: int, n: int) -> int:
        return -(-stages[k][0] // n) * stages[k][1]

    heap = [(-windows(k, 1), k) for k in range(len(stages))]
    heapq.heapify(heap)
    while heap:
        slowest, k = heapq.heappop(heap)
        oh, _, cost = stages[k]
        more = copies[k] + 1
        while more <= oh and windows(k, more) == -slowest:
            more += 1  # the smallest count that makes this stage faster
        extra = (more - copies[k]) * cost
        if more > oh or used + extra > limit:
            break  # the slowest stage cannot get faster
        used += extra
        copies[k] = more
        heapq.heappush(heap, (-windows(k, more), k))
    return copies


def layers_of(module: Module, target: Target) -> list[Layer]:
    """The module's chip ops in program order, with what the phase model needs; a
    matvec whose blocks exceed the chip's crossbars as consecutive pieces, one per
    column block (`tile` made one column of blocks fit)."""
    layers: list[Layer] = []
    for op in module.ops():
        if op.kind in CHIP_KINDS:
            layers += _pieces(module, op, target)
    return layers


def _pieces(module: Module, op: Op, target: Target) -> list[Layer]:
    reads = tuple(v for v in op.inputs if not module.is_constant(v))
    out = module.values[op.outputs[0]]
    oh, ow, channels = image_dims(out)
    base = Layer(op.name, op.kind, reads, op.outputs[0], out_rows=oh, row_windows=ow)
    if op.kind != "matvec":
        kernel = op.attrs.get("kernel", [1, 1])
        vector = oh * ow * channels * kernel[0] * kernel[1] * target.latency.vector_per_element
        return [replace(base, kernel_rows=kernel[0], vector_cycles=vector)]
    slices = op.attrs["slices"]
    # Per column block: [columns, crossbars, cells, rows written, blocks, weight columns].
    per_column: dict[int, list[int]] = {}
    demands: dict[int, list[int]] = {}
    keys: dict[int, list[Hashable]] = {}
    cells: dict[int, list[tuple[int, int]]] = {}
    for i, j in blocks_of(op):
        r, c = block_shape(module, op, i, j)
        width, height = c.stop - c.start, r.stop - r.start
        figures = per_column.setdefault(j, [0, 0, 0, 0, 0, width])
        demands.setdefault(j, []).append(rounded_width(width, target.cols) * slices)
        keys.setdefault(j, []).append(weight_key(module, op, i, j))
        cells.setdefault(j, []).append((height * width * slices, height * slices))
        figures[0] += rounded_width(width, target.cols) * slices
        figures[1] += -(-width * slices // target.cols)
        figures[2] += height * width * slices
        figures[3] += height * slices
        figures[4] += 1
    # A layer that fits is one piece; one larger than the chip a piece per column block,
    # so that a phase can take as many of its output channels as it has room for.
    whole = sum(figures[0] for figures in per_column.values())
    columns = sorted(per_column)
    groups = ([columns] if whole <= target.total_crossbars * target.cols
              else [[j] for j in columns])
    n = module.values[op.inputs[1]].shape[1]
    pieces = []
    for part, group in enumerate(groups):
        total = [sum(per_column[j][f] for j in group) for f in range(6)]
        pieces.append(replace(
            base, columns=total[0], crossbars=total[1],
            weight_bytes=-(-total[2] * target.cell_bits // 8), rows_written=total[3],
            blocks=total[4], kernel_rows=op.attrs["kernel"][0], part=part, parts=len(groups),
            column_blocks=tuple(group) if len(groups) > 1 else (), share=total[5] / n,
            block_demands=tuple(d for j in group for d in demands[j]),
            block_keys=tuple(k for j in group for k in keys[j]),
            block_cells=tuple(n for j in group for n, _ in cells[j]),
            block_heights=tuple(h for j in group for _, h in cells[j])))
    return pieces


def partition(module: Module, target: Target, method: str = "optimal", batch: int = 1,
              budget: float = 0.0) -> PhasePlan:
    """The phases of `module` (tiled) on `target`; one phase when its weights fit.

    `budget` is the replication policy's fraction of the crossbars copies may use
    inside each phase (0: one copy of every layer)."""
    if method not in METHODS:
        raise CimcError(f"partition method {method!r}: choose one of {', '.join(METHODS)}")
    layers = layers_of(module, target)
    model = PhaseModel(module, layers, target, batch, budget)
    model.check_layers()
    cuts = model.greedy() if method == "greedy" else model.optimal()
    phases = tuple(model.phase(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    if len(phases) > 1 and not target.reprogrammable:
        raise CimcError(f"the model's weights need {len(phases)} phases on target "
                        f"{target.name!r}, whose crossbars cannot be reprogrammed; choose "
                        "a target with more crossbars or reprogrammable ones")
    total = sum(p.cycles(batch, target.global_bytes_per_cycle) for p in phases)
    return PhasePlan(method, batch, phases, tuple(layers), total, target.clock_mhz)


class PhaseModel:
    """The cost of ranges of `layers` (contiguous phases) on one target."""

    def __init__(self, module: Module, layers: list[Layer], target: Target, batch: int,
                 budget: float) -> None:
        self.layers, self.target, self.batch, self.budget = layers, target, batch, budget
        self.capacity = target.total_crossbars * target.cols
        self.producers: dict[str, list[int]] = {}  # value -> the layers (pieces) writing it
        for k, layer in enumerate(layers):
            self.producers.setdefault(layer.writes, []).append(k)
        last_use: dict[str, int] = {}
        for k, layer in enumerate(layers):
            for value in layer.reads:
                last_use[value] = k
        self.last_use = last_use
        # Values the host reads (through `dequantize`) or the model outputs.
        host_reads = {v for op in module.ops() if op.kind not in CHIP_KINDS for v in op.inputs}
        self.leaves = {layer.writes for layer in layers
                       if layer.writes in host_reads or layer.writes in module.outputs}
        self.bytes = {name: module.values[name].size * module.values[name].numpy_dtype.itemsize
                      for name in module.values}
        self.prefix = [0]
        for layer in layers:
            self.prefix.append(self.prefix[-1] + layer.columns)
        self.reach = self._reach()

    def columns(self, start: int, stop: int) -> int:
        return self.prefix[stop] - self.prefix[start]

    def fits(self, start: int, stop: int) -> bool:
        # no layers at all (the host runs the whole model after the input's quantize) fit
        return stop == start or stop <= self.reach[start]

    def _reach(self) -> list[int]:
        """For each start, the end of the longest range of layers from it that fits as
        the placer's first fill packs it (which must succeed): blocks in order, each into
        the current core while the core's crossbar columns hold it, else into the next
        (a block whose weights the core holds already takes no room);
        at most the chip's cores.

        A core's blocks depend only on where it starts, so `_core_ends` finds, for every
        block, where a core starting at it ends (one sliding window over the blocks), and
        a start's range is `cores` of those steps: O(blocks + n · cores), where packing
        from each start anew is O(n · reach)."""
        t = self.target
        blocks = [(k, demand, key) for k, layer in enumerate(self.layers)
                  for demand, key in zip(layer.block_demands, layer.block_keys, strict=True)]
        per_core = t.crossbars_per_core * t.cols
        ends = self._core_ends(blocks, per_core)
        first = [len(blocks)] * (len(self.layers) + 1)  # each layer's first block at or after
        for j in range(len(blocks) - 1, -1, -1):
            first[blocks[j][0]] = j
        for k in range(len(self.layers) - 1, -1, -1):
            first[k] = min(first[k], first[k + 1])
        reach = []
        for start in range(len(self.layers)):
            at = first[start]
            # (a first block wider than a core opens a second core at once)
            wide = at < len(blocks) and blocks[at][1] > per_core
            for _ in range(t.cores - wide):
                if at == len(blocks):
                    break
                at = ends[at]
            # the layer of the block the next core would start with does not fit
            reach.append(len(self.layers) if at == len(blocks) else blocks[at][0])
        return reach

    @staticmethod
    def _core_ends(blocks: list[tuple[int, int, Hashable]], per_core: int) -> list[int]:
        """For each block j, the first block a core starting at j does not hold: the
        core takes blocks while the demands of their distinct weights fit `per_core` (a
        block whose weights it holds takes no room), and always its first block. The
        window's end only moves forward as its start does (fewer distinct weights)."""
        ends = [0] * len(blocks)
        count: dict[Hashable, int] = defaultdict(int)
        room = stop = 0
        for j in range(len(blocks)):
            stop = max(stop, j)
            if stop == j:  # an empty window: the core's first block always goes in
                count.clear()
                room = 0
            while stop < len(blocks):
                _, demand, key = blocks[stop]
                if count[key] == 0 and stop > j and room + demand > per_core:
                    break
                if count[key] == 0:
                    room += demand
                count[key] += 1
                stop += 1
            ends[j] = stop
            _, demand, key = blocks[j]  # the window's start moves past block j
            count[key] -= 1
            if count[key] == 0:
                room -= demand
        return ends

    def check_layers(self) -> None:
        """CimcError naming the first layer whose weights alone exceed the chip."""
        t = self.target
        for k, layer in enumerate(self.layers):
            if not self.fits(k, k + 1):
                raise channel_too_big(f"op {layer.name!r}", layer.blocks,
                                      -(-layer.columns // t.cols), t)

    def greedy(self) -> list[int]:
        cuts = [0]
        for k in range(1, len(self.layers) + 1):
            if not self.fits(cuts[-1], k):
                cuts.append(k - 1)
        return [*cuts, len(self.layers)] if cuts[-1] != len(self.layers) else cuts

    def optimal(self) -> list[int]:
        n = len(self.layers)
        if self.fits(0, n):
            return [0, n]  # one phase: nothing to choose
        best = [0.0] + [math.inf] * n
        cut = [0] * (n + 1)
        bw = self.target.global_bytes_per_cycle
        if not self.budget and all(a <= b for a, b in itertools.pairwise(self.reach)):
            # The same minimum, each start's phases costed incrementally as they grow:
            # O(n * reach), where costing each range anew is O(n * reach^2) (an unrolled
            # recurrent layer is thousands of ops, its ranges long). Ties keep the
            # longer last phase, as below. A start from which even a lower bound of the
            # rest costs more than the greedy cuts is on no best path: skipped.
            bound = self._rest_bound(bw)
            limit = sum(self.phase(a, b).cycles(self.batch, bw)
                        for a, b in itertools.pairwise(self.greedy()))
            limit += limit * 1e-9  # the bound's sums round differently
            for start in range(n):
                if best[start] + bound[start] > limit:
                    continue
                for stop, cycles in self._growing(start, bw):
                    cost = best[start] + cycles
                    if cost <= best[stop]:
                        best[stop], cut[stop] = cost, start
            return self._cuts(cut)
        for stop in range(1, n + 1):
            for start in range(stop - 1, -1, -1):
                if not self.fits(start, stop):
                    break  # longer ranges ending here do not fit either
                cost = best[start] + self.phase(start, stop).cycles(self.batch, bw)
                if cost < best[stop]:  # strict: ties keep the longer last phase
                    best[stop], cut[stop] = cost, start
        return self._cuts(cut)

    @staticmethod
    def _cuts(cut: list[int]) -> list[int]:
        cuts = [len(cut) - 1]
        while cuts[-1]:
            cuts.append(cut[cuts[-1]])
        return cuts[::-1]

    @cached_property
    def terms(self) -> list[tuple[float, float, float, float, bool, int]]:
        """Per layer, what it adds to a phase without replication: its stage, work and
        fill cycles, the bytes it stores if read later, whether the host reads them,
        and the layer that reads them last."""
        t, terms = self.target, []
        for layer in self.layers:
            if layer.kind == "matvec":
                stage = float(layer.out_rows * layer.row_windows * t.mvm_cycles)
                work = float(layer.out_rows * layer.row_windows * t.mvm_cycles
                             * -(-layer.blocks // t.crossbars_per_core))
            else:
                stage = work = layer.vector_cycles
            terms.append((stage, work, stage * layer.kernel_rows / layer.out_rows,
                          self.bytes[layer.writes] * layer.share,
                          layer.writes in self.leaves, self.last_use.get(layer.writes, -1)))
        return terms

    def _rest_bound(self, bw: float) -> list[float]:
        """For each start, a lower bound of the cycles of any phases covering layers
        [start, n): their fill and work add up (a phase's period is at least its work
        over the cores), and each distinct weight of the rest is programmed at least
        once (its bytes and its crossbar rows). A phase [a, b) plus the bound from b is
        at least the bound from a, so a skipped start is on no best path."""
        t = self.target
        bound = [0.0] * (len(self.layers) + 1)
        fill = work = cells = rows = 0.0
        seen: set[Hashable] = set()
        for k in range(len(self.layers) - 1, -1, -1):
            layer, (_, more_work, more_fill, *_) = self.layers[k], self.terms[k]
            fill, work = fill + more_fill, work + more_work
            for key, count, height in zip(layer.block_keys, layer.block_cells,
                                          layer.block_heights, strict=True):
                if key not in seen:
                    seen.add(key)
                    cells, rows = cells + count, rows + height
            # a phase's programming: at least its bytes over the bandwidth, and its rows
            # written by at most every core at once
            program = max(cells * t.cell_bits / 8 / t.weight_bytes_per_cycle,
                          rows * t.latency.program_per_row / t.cores)
            bound[k] = fill + self.batch * work / t.cores + program
        return bound

    def _growing(self, start: int, bw: float) -> Iterator[tuple[int, float]]:
        """(stop, cycles of phase [start, stop)) for every stop that fits, without
        replication, the figures of `phase` kept as running sums."""
        t, terms = self.target, self.terms
        stage_max = work = fill = 0.0
        weight_bytes = rows = 0
        loaded: set[str] = set()
        held: set[Hashable] = set()  # the weights programmed so far
        loads = 0.0
        leaves = 0.0
        waiting: dict[int, float] = defaultdict(float)  # last use -> bytes stored if read
        waiting_sum = 0.0
        per_core = t.crossbars_per_core * t.cols
        for stop in range(start + 1, self.reach[start] + 1):
            layer = self.layers[stop - 1]
            stage, more_work, more_fill, stored, leaf, last = terms[stop - 1]
            work += more_work
            stage_max = max(stage_max, stage)
            fill += more_fill
            if layer.block_keys:
                more_bytes, more_rows = layer.programmed(held, t.cell_bits)
                weight_bytes += more_bytes
                rows += more_rows
            for value in layer.reads:
                if value not in loaded:
                    loaded.add(value)
                    makers = self.producers.get(value)
                    loads += (self.bytes[value] if makers is None else
                              sum(self.bytes[value] * self.layers[k].share for k in makers
                                  if k < start))
            if leaf:
                leaves += stored
            elif last >= stop:
                waiting[last] += stored
                waiting_sum += stored
            if waiting:
                waiting_sum -= waiting.pop(stop - 1, 0.0)  # read no later than this phase
            period = max(stage_max, work / t.cores)
            columns = self.prefix[stop] - self.prefix[start]
            cores = max(1, min(t.cores, -(-columns // per_core)))
            program = max(weight_bytes / t.weight_bytes_per_cycle,
                          rows * t.latency.program_per_row / cores)
            spill = round(loads + leaves + waiting_sum)
            yield stop, program + fill + self.batch * (period + spill / bw)

    def phase(self, start: int, stop: int) -> Phase:
        t = self.target
        members = self.layers[start:stop]
        # By position in the phase: the pieces of a split layer share its name.
        matvecs = [k for k, layer in enumerate(members) if layer.kind == "matvec"]
        stages = [(members[k].out_rows, members[k].row_windows, members[k].crossbars)
                  for k in matvecs]
        copies = (choose_copies(stages, self.budget * t.total_crossbars) if self.budget > 0
                  else [1] * len(matvecs))
        copy_of = dict(zip(matvecs, copies, strict=True))
        stage: list[float] = []
        work = 0.0
        for k, layer in enumerate(members):
            if layer.kind == "matvec":
                stage.append(-(-layer.out_rows // copy_of[k]) * layer.row_windows
                             * t.mvm_cycles)
                # A core runs one window's MVMs at once only on distinct crossbars.
                work += (layer.out_rows * layer.row_windows * t.mvm_cycles
                         * -(-layer.blocks // t.crossbars_per_core))
            else:
                stage.append(layer.vector_cycles)
                work += layer.vector_cycles
        period = max(max(stage, default=0.0), work / t.cores)
        fill = sum(cycles * layer.kernel_rows / layer.out_rows
                   for cycles, layer in zip(stage, members, strict=True))
        columns = self.columns(start, stop)
        weight_bytes = rows = 0
        held: set[Hashable] = set()  # the weights programmed so far (replicas never share)
        for k, layer in enumerate(members):
            more_bytes, more_rows = layer.programmed(held, t.cell_bits)
            weight_bytes += more_bytes * copy_of.get(k, 1)
            rows += more_rows * copy_of.get(k, 1)
        cores = max(1, min(t.cores, -(-columns // (t.crossbars_per_core * t.cols))))
        program = max(weight_bytes / t.weight_bytes_per_cycle,
                      rows * t.latency.program_per_row / cores)
        return Phase(start, stop, tuple(layer.name for layer in members), columns,
                     weight_bytes, self.spill_bytes(start, stop), copy_of, program, fill,
                     period)

    def spill_bytes(self, start: int, stop: int) -> int:
        """Bytes the phase loads (what earlier phases made of the values it reads, model
        inputs) and stores (what it makes of values read after it, model outputs), per
        inference."""
        total = 0.0
        loaded = {v for layer in self.layers[start:stop] for v in layer.reads}
        for value in sorted(loaded):  # a fixed order: float sums, whatever the hash seed
            makers = self.producers.get(value)
            if makers is None:
                total += self.bytes[value]  # a model input
            else:
                total += sum(self.bytes[value] * self.layers[k].share for k in makers
                             if k < start)
        for layer in self.layers[start:stop]:
            if self.last_use.get(layer.writes, -1) >= stop or layer.writes in self.leaves:
                total += self.bytes[layer.writes] * layer.share
        return round(total)
