"""The `cpsat` placer's search: annealing and CP-SAT windows in turn, the whole budget.

The budget grows with the problem: the annealing moves of the `anneal` placer
(`anneal_moves`, per unit) and one window per UNITS_PER_WINDOW units
(`window_budget`), times the effort.

1. Anneal from each of two layer-order fills, along a generalized Hilbert curve
   (compact patches) and along the snake (rows), a quarter of the moves each
   (two independent runs: annealing's outcome varies a lot from run to run),
   and keep the better.
2. Then CYCLES cycles of: CP-SAT windows on the incumbent (each re-assigns
   the units of a few cores optimally, cimc/placement/cpsat.py) until the
   cycle's windows are spent or a round of windows finds nothing better; then
   a reheated annealing run from the incumbent (a perturbation that escapes
   the windows' local optimum, keeping the best placement seen). Windows a
   cycle did not use go to the next. The search ends at the lower bound (the
   placement is optimal) or after a cycle that improved nothing; a network
   too small for one window anneals on instead (and never imports OR-Tools).
3. Repair against the pipeline's latency bound (`repair`, cimc/placement/stages.py):
   groups leave the shared cores where their rows delay each other.

Its annealing does as many moves as the `anneal` placer's, and on targets with
several cores a tile also exchanges the whole contents of two cores of
different tiles (a layer's blocks move together, or to an empty part of the
mesh), each counted as one move per unit it moves.

Every count (moves, windows) is fixed by the effort, so the result depends
only on the problem, the effort and the seed; the optional wall-clock deadline
is a safety net that is reported when it fires.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from cimc.diagnostics import progress, showing_progress
from cimc.placement.baselines import (
    Annealer,
    anneal,
    anneal_moves,
    core_order,
    curve_order,
    fill,
    payload_order,
)
from cimc.placement.bound import hop_bytes_bound
from cimc.placement.cpsat import SearchLog, lns, window_budget
from cimc.placement.problem import Problem
from cimc.placement.stages import Stages

CYCLES = 8
# Share of the anneal placer's moves the cpsat placer does, the reheated
# temperature of the perturbations, and the share of proposals that exchange
# two cores' contents.
ANNEAL_SHARE = 1.0
REHEAT = 0.3
EXCHANGES = 0.3
# Cores, nearest first, a repair tries for a group it moves off a shared core: at least
# REPAIR_CORES, and at least the cores of REPAIR_TILES tiles (isaac's 12-core tiles: 24
# cores are two tiles, too few to unshare MobileNetV2/32, which then simulated 0.2%
# slower than snake after the fill fix; with 48, 1.0% faster modelled).
REPAIR_CORES = 24
REPAIR_TILES = 4


@dataclass
class Budget:
    """The search's counted work, from the problem's size (units, occupied cores)."""

    moves: int
    windows: int

    @classmethod
    def of(cls, problem: Problem, effort: float) -> Budget:
        return cls(int(anneal_moves(problem, effort) * ANNEAL_SHARE),
                   window_budget(problem, effort))


def improve(problem: Problem, effort: float, seed: int, deadline: float | None = None,
            stages: Stages | None = None) -> tuple[np.ndarray, SearchLog]:
    """The cpsat placer's placement (module docstring), repaired against `stages` when
    given, and what the search did."""
    log = SearchLog()
    best = _search(problem, effort, seed, deadline, log)
    if stages is not None and not log.timed_out:
        best = repair(problem, stages, best, log)
    return best, log


def _search(problem: Problem, effort: float, seed: int, deadline: float | None,
            log: SearchLog) -> np.ndarray:
    rng = random.Random(seed)
    units = payload_order(problem)
    starts = [fill(problem, curve_order(problem), units),
              fill(problem, core_order(problem, True), units)]
    budget = Budget.of(problem, effort)
    # A placement at the lower bound is optimal: nothing left to search.
    floor = hop_bytes_bound(problem)
    # Exchanges pay off where a tile has several cores (a core's blocks move across
    # the mesh at once); on one-core tiles they did worse on the bench.
    exchanges = EXCHANGES if problem.target.cores_per_tile > 1 else 0.0
    fitted = min(starts, key=problem.cost)

    def report(placement: np.ndarray) -> None:  # the status line on a terminal
        if showing_progress():
            progress(f"place: hop-bytes {problem.cost(placement):,} (lower bound {floor:,})")

    report(fitted)
    if problem.cost(fitted) <= floor:
        return fitted
    runs = []
    for start in starts:
        run, cut = anneal(problem, start, budget.moves // 2 // len(starts),
                          rng.randrange(1 << 30), deadline, 1.0, exchanges)
        log.timed_out |= cut
        runs.append(run)
    best = min(runs, key=problem.cost)
    report(best)
    cycles = min(CYCLES, budget.windows)
    if not cycles:  # annealing alone: the other half of the moves from the better run
        best, cut = anneal(problem, best, budget.moves - budget.moves // 2,
                           rng.randrange(1 << 30), deadline, REHEAT, exchanges)
        log.timed_out |= cut
        return best
    perturb = (budget.moves - budget.moves // 2) // max(1, cycles - 1)
    windows = 0
    cost = problem.cost(best)
    for cycle in range(cycles):
        if cost <= floor:
            break
        windows += budget.windows // cycles + (budget.windows % cycles if cycle == 0 else 0)
        best, windows = lns(problem, best, windows, rng, log, deadline)
        report(best)
        if log.timed_out or cycle == cycles - 1:
            break
        best, cut = anneal(problem, best, perturb, rng.randrange(1 << 30), deadline, REHEAT,
                           exchanges)
        log.timed_out |= cut
        # A cycle that improved nothing leaves the next at the same placement: stop.
        before, cost = cost, problem.cost(best)
        if cost >= before:
            break
    return best


def repair(problem: Problem, stages: Stages, core_of: np.ndarray, log: SearchLog
           ) -> np.ndarray:
    """Unshare the cores whose groups delay each other (cimc/placement/stages.py): while
    some shared core's latency bound exceeds the critical path, move one of its groups'
    blocks there to the core, among the nearest (REPAIR_CORES, REPAIR_TILES), where the
    bound of neither core reaches the old one and hop_bytes grows least. Ends when no shared core
    exceeds the path or the worst one cannot be helped; at most one move per core."""
    state = Annealer(problem, core_of)
    hops = problem.hops
    tried = max(REPAIR_CORES, REPAIR_TILES * problem.target.cores_per_tile)
    for _ in range(problem.tiles):
        bounds = {c: stages.core(sorted(held)) for c, held in state.held.items()
                  if len(held) > 1}
        worst_core = min(bounds, key=lambda c: (-bounds[c], c), default=None)
        if worst_core is None or bounds[worst_core] <= stages.path:
            break
        worst = bounds[worst_core]
        near = np.argsort(hops[worst_core, :], kind="stable")[1:tried + 1].tolist()
        best: tuple[int, int, int] | None = None  # (hop_bytes change, group, core)
        for g in sorted(state.held[worst_core]):
            rest = sorted(set(state.held[worst_core]) - {g})
            if stages.core(rest) >= worst:
                continue
            moving = [u for u in state.on(worst_core) if state.group[u] == g]
            for d in near:
                if stages.core(sorted(set(state.held.get(d, {})) | {g})) >= worst:
                    continue
                change, made = 0, []
                for u in moving:
                    if not state.room(u, d):
                        break
                    change += state.delta(u, d)
                    state.move(u, d)
                    made.append(u)
                for u in reversed(made):
                    state.move(u, worst_core)
                if len(made) == len(moving) and (best is None or change < best[0]):
                    best = (change, g, d)
        if best is None:
            break
        _, g, d = best
        for u in [u for u in state.on(worst_core) if state.group[u] == g]:
            state.move(u, d)
        log.repaired += 1
    return np.array(state.tile, dtype=np.int64)
