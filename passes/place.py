"""place: assign every unit (crossbar block of a matvec replica, vector op) to a core.

The problem (cimc/placement/problem.py) comes from the traffic model: units with
crossbar-column and table demands, payloads between them, the mesh. The
placer (`placer` option, docs/placement.md) minimises hop_bytes:
* `cpsat` (default): annealing (with exchanges of whole cores) from the
  Hilbert-curve and the snake fills, then large-neighbourhood search with
  OR-Tools CP-SAT windows and reheated annealing in turn over the whole budget,
  then a repair that moves groups off the shared cores whose rows delay the
  pipeline (the latency bound of the module's row tasks, built here as
  `Stages`) (cimc/placement/search.py, cpsat.py, stages.py);
* `anneal`: simulated annealing from the snake fill, the whole budget;
* `sequential`: units in layer order fill cores 0, 1, 2, ... (row-major);
* `snake`: the same fill along a boustrophedon path over the tiles.
Every placer keeps each core's load (the cycles of the MVMs of the distinct
matvec replicas it holds blocks of, and of its vector ops' vector work) under
the slowest replica's, and a core shared by several replicas under half of it
(cimc/placement/problem.py), so replicas land on different cores and no shared
core becomes a second bottleneck; a vector op has a core to itself, and one
replica's blocks on a core fill at most the core's crossbars.
`effort` sets the search's work in counted annealing moves and CP-SAT windows,
both proportional to the problem's units (1 = the default budget), so the
placement depends only on the module, the target, the effort and the seed,
never on the machine's speed or load.
`time_limit` (seconds, 0 = none) is a wall-clock safety net only: if it stops
the search, a warning says the placement now depends on the machine, and
`summary.timed_out` is set.

Attributes added:
* matvec: `block_cores`, `block_groups` (crossbar group id on that core),
  `block_slices` (flat `[crossbar, col] * slices` per block), all replica-major
  (replica 0's blocks in `blocks` order, then replica 1's ...); `reducers`
  (per replica and column block, replica-major: the core of the column's
  first block, which adds the partial sums);
* pool, eltwise, rescale, scale, product, dot, pixel_softmax, pixel_layernorm, join,
  gather: `core`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from cimc.analysis.traffic import (
    VECTOR_KINDS,
    block_name,
    max_link_bytes,
    reducer_block,
    replicas,
    unit_edges,
)
from cimc.diagnostics import CimcError, warn
from cimc.dialect.chip import blocks_of
from cimc.dialect.phased import phase_modules
from cimc.ir.module import Module
from cimc.pass_base import BackendPass
from cimc.placement.baselines import anneal, anneal_moves, core_order, fill, fit_load_cap
from cimc.placement.bound import hop_bytes_bound
from cimc.placement.problem import Problem, build_problem, distribute, pack
from cimc.placement.stages import Stages

PLACERS = ("cpsat", "anneal", "sequential", "snake")
DEFAULT_EFFORT = 1.0


@dataclass
class PlacementSummary:
    """What the placer achieved, for the report."""

    placer: str
    seconds: float
    hop_bytes: int
    max_link_bytes: int
    hop_bytes_bound: int
    start_hop_bytes: int  # of the constructive start (the snake fill)
    timed_out: bool
    windows: int = 0  # CP-SAT windows solved
    improved: int = 0  # of which improved the placement
    repaired: int = 0  # groups the repair moved off shared cores

    @property
    def gap(self) -> float:
        """How far above the lower bound, as a fraction of hop_bytes."""
        return 1 - self.hop_bytes_bound / self.hop_bytes if self.hop_bytes else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"placer": self.placer, "place_seconds": round(self.seconds, 3),
                "hop_bytes": self.hop_bytes, "max_link_bytes": self.max_link_bytes,
                "hop_bytes_bound": self.hop_bytes_bound, "gap": round(self.gap, 4),
                "start_hop_bytes": self.start_hop_bytes, "timed_out": self.timed_out,
                "windows": self.windows, "improved": self.improved,
                "repaired": self.repaired}


def run_placer(problem: Problem, placer: str, effort: float, seed: int,
               time_limit: float = 0.0, stages: Stages | None = None
               ) -> tuple[np.ndarray, dict[str, int | bool]]:
    """Cores of all units and what the search did; `effort` counts the work,
    `time_limit` (0: none) is the wall-clock safety net; `stages` (the row tasks of
    the module) lets the cpsat placer repair cores whose groups delay each other."""
    if placer not in PLACERS:
        raise CimcError(f"unknown placer {placer!r}; choose one of {', '.join(PLACERS)}")
    fit_load_cap(problem)
    snake = fill(problem, core_order(problem, snake=True))
    if placer in ("sequential", "snake"):
        return (fill(problem, core_order(problem, snake=False)) if placer == "sequential"
                else snake), {"timed_out": False}
    deadline = time.perf_counter() + time_limit if time_limit else None
    info: dict[str, int | bool] = {}
    if problem.cost(snake) == 0:
        return snake, {"timed_out": False}  # nothing crosses a core: nothing to search
    if placer == "anneal":
        moves = anneal_moves(problem, effort)
        tiles, timed_out = anneal(problem, snake, moves, seed, deadline)
        info["timed_out"] = timed_out
    else:
        from cimc.placement.search import improve

        tiles, log = improve(problem, effort, seed, deadline, stages)
        info.update(timed_out=log.timed_out, windows=log.windows, improved=log.improved,
                    repaired=log.repaired)
    cores = distribute(problem, tiles)
    return (snake if cores is None else cores), info


@dataclass
class Place(BackendPass):
    name: ClassVar[str] = "place"
    requires: ClassVar[tuple[str, ...]] = ("tile",)  # replicate is optional (one copy each)
    placer: str = "cpsat"
    effort: float = DEFAULT_EFFORT
    time_limit: float = 0.0  # seconds of wall clock, a safety net (0: none)
    seed: int = 0
    summary: PlacementSummary | None = field(default=None, init=False, repr=False)

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        for op in module.ops():
            if op.kind == "matvec" and "block_cores" not in op.attrs:
                return f"matvec {op.name!r} has no cores"
            if op.kind == "matvec" and "blocks" in op.attrs and len(
                    op.attrs["block_cores"]) != replicas(op) * len(blocks_of(op)):
                return (f"matvec {op.name!r} has cores for {len(op.attrs['block_cores'])} "
                        f"blocks, not for its {replicas(op)} copies of {len(blocks_of(op))}")
            if op.kind in VECTOR_KINDS and "core" not in op.attrs:
                return f"op {op.name!r} ({op.kind}) has no core"
        return None

    def apply(self, module: Module) -> None:
        for option, value in (("effort", self.effort), ("time-limit", self.time_limit)):
            if not (value >= 0 and np.isfinite(value)):  # also refuses NaN
                raise CimcError(f"place: {option} {value}: give a finite number >= 0")
        groups: dict[int, int] = {}  # core -> groups numbered so far (phase-major)
        summaries = [self._place(phase, groups) for phase in phase_modules(module)]
        self.summary = summaries[0] if len(summaries) == 1 else PlacementSummary(
            self.placer, sum(s.seconds for s in summaries),
            sum(s.hop_bytes for s in summaries),
            max(s.max_link_bytes for s in summaries),
            sum(s.hop_bytes_bound for s in summaries),
            sum(s.start_hop_bytes for s in summaries),
            any(s.timed_out for s in summaries), sum(s.windows for s in summaries),
            sum(s.improved for s in summaries), sum(s.repaired for s in summaries))

    def _place(self, module: Module, groups: dict[int, int]) -> PlacementSummary:
        """Place one phase (the whole module when it has one) on the whole chip."""
        target = self.target
        edges = unit_edges(module, target)
        problem, found = build_problem(module, target, edges)
        start = time.perf_counter()
        stages = Stages(module, target) if self.placer == "cpsat" else None
        cores, info = run_placer(problem, self.placer, self.effort, self.seed, self.time_limit,
                                 stages)
        seconds = time.perf_counter() - start
        if info.get("timed_out"):
            warn(f"place: the wall-clock limit of {self.time_limit:g} s stopped the placer "
                 "early, so the program depends on this machine's speed and load; raise "
                 "--place-time-limit or lower --place-effort for a reproducible program")
        unit_core = {name: int(c) for name, c in zip(problem.names, cores, strict=True)}
        snake = fill(problem, core_order(problem, snake=True))
        write_attributes(module, problem, cores, [u.slices for u in found], groups)
        return PlacementSummary(
            self.placer, seconds, problem.cost(cores),
            max_link_bytes(edges, unit_core, target), hop_bytes_bound(problem),
            problem.cost(snake), bool(info.get("timed_out", False)),
            int(info.get("windows", 0)), int(info.get("improved", 0)),
            int(info.get("repaired", 0)))


def write_attributes(module: Module, problem: Problem, cores: np.ndarray,
                     slices: list[int], groups: dict[int, int] | None = None) -> None:
    """The placement attributes of every matvec and vector op (module docstring);
    `groups` (core -> groups numbered so far, updated) continues the numbering of
    earlier phases."""
    index = {name: k for k, name in enumerate(problem.names)}
    places = pack(problem, cores, slices)
    owner = problem.owners(cores)
    groups = {} if groups is None else groups
    group_of: dict[int, int] = {}  # block unit -> its crossbar group id
    for op in module.ops():
        if op.kind == "matvec":
            block_cores, block_groups, block_slices, reducers = [], [], [], []
            for r in range(replicas(op)):
                for i, j in blocks_of(op):
                    u = index[block_name(op, r, i, j)]
                    core = int(cores[u])
                    block_cores.append(core)
                    if owner[u] not in group_of:  # (a block sharing cells: the owner's)
                        group_of[owner[u]] = groups.get(core, 0)
                        groups[core] = groups.get(core, 0) + 1
                    block_groups.append(group_of[owner[u]])
                    block_slices += [v for place in places[u] for v in place]
                columns = sorted({j for _, j in blocks_of(op)})
                reducers += [int(cores[index[block_name(op, r, reducer_block(op, j), j)]])
                             for j in columns]
            op.attrs.update(block_cores=block_cores, block_groups=block_groups,
                            block_slices=block_slices, reducers=reducers)
        elif op.name in index:
            op.attrs["core"] = int(cores[index[op.name]])
