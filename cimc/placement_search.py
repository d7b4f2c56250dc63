"""The `cpsat` placer's search: annealing and CP-SAT windows in turn, the whole budget.

1. Start from the better of two layer-order fills: along a generalized
   Hilbert curve (compact patches) and along the snake (rows).
2. Anneal from it for half the annealing moves: cheap long-range moves.
3. Then CYCLES cycles of: CP-SAT windows on the incumbent (each re-assigns
   the units of a few cores optimally, cimc/placement_cpsat.py) until the
   cycle's windows are spent or a round of windows finds nothing better; then
   a reheated annealing run from the incumbent (a perturbation that escapes
   the windows' local optimum, keeping the best placement seen). Windows a
   cycle did not use go to the next.

Every count (moves, windows) is fixed by the time limit, so the result depends
only on the problem, the limit and the seed; the wall-clock deadline is a
guard that is reported when it fires.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from cimc.placement import Problem
from cimc.placement_baselines import (
    ANNEAL_MOVES_PER_SECOND,
    anneal,
    core_order,
    curve_order,
    fill,
)
from cimc.placement_cpsat import WINDOWS_PER_SECOND, SearchLog, lns

CYCLES = 4
# Share of the anneal placer's moves the cpsat placer does (the rest of its time
# goes to CP-SAT windows), and the reheated temperature of the perturbations.
ANNEAL_SHARE = 0.3
REHEAT = 0.3


@dataclass
class Budget:
    moves: int
    windows: int

    @classmethod
    def of(cls, seconds: float) -> Budget:
        return cls(int(seconds * ANNEAL_MOVES_PER_SECOND * ANNEAL_SHARE),
                   max(1, int(seconds * WINDOWS_PER_SECOND)))


def improve(problem: Problem, seconds: float, seed: int, deadline: float | None = None
            ) -> tuple[np.ndarray, SearchLog]:
    """The cpsat placer's placement (module docstring) and what the search did."""
    rng = random.Random(seed)
    log = SearchLog()
    budget = Budget.of(seconds)
    starts = [fill(problem, curve_order(problem)), fill(problem, core_order(problem, True))]
    best = min(starts, key=problem.cost)
    best, cut = anneal(problem, best, budget.moves // 2, rng.randrange(1 << 30), deadline)
    log.timed_out |= cut
    perturb = (budget.moves - budget.moves // 2) // (CYCLES - 1)
    windows = 0
    for cycle in range(CYCLES):
        windows += budget.windows // CYCLES + (budget.windows % CYCLES if cycle == 0 else 0)
        best, windows = lns(problem, best, windows, rng, log, deadline)
        if log.timed_out or cycle == CYCLES - 1:
            break
        best, cut = anneal(problem, best, perturb, rng.randrange(1 << 30), deadline, REHEAT)
        log.timed_out |= cut
    return best, log
