"""The default placer: large-neighbourhood search with OR-Tools CP-SAT.

Start from a constructive placement (the snake fill: layers follow a
boustrophedon path over the mesh, so consecutive layers sit side by side).
Then repeat: pick a *window* of a few neighbouring tiles (a seed tile and its
nearest tiles, occupied or empty), free every unit on them, and let CP-SAT
re-assign those units among the window's tiles optimally with everything
else fixed; keep the result if hop_bytes fell.

The window subproblem is exact for the payload cost (docs/placement.md):
* x[u, t] (unit u on tile t) with one tile per unit, column and table capacity
  per tile as linear constraints;
* reach[p, t] >= x[v, t] for every freed other unit v of payload p: the
  payload visits tile t;
* center fixed at tile a: cost bytes * hops(a, t) * reach[p, t];
* center freed: bytes * x[c, s] * (hops from s to the fixed others' tiles),
  and y[p, s, t] >= x[c, s] + reach[p, t] - 1 costing bytes * hops(s, t)
  (the product linearised, only within the window).
The current placement is given as a complete hint, so every solve starts
from a feasible solution.

Determinism: one CP-SAT worker (several workers race, so their result depends
on timing), a fixed random seed, a deterministic time limit per solve (CP-SAT
counts work, not seconds), and a counted number of windows (proportional to
the effort), chosen by a seeded generator. An optional wall-clock safety limit
stops early; then the result is the best found so far and the caller warns.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass

import numpy as np

from cimc.placement.problem import Problem, payload_cost

# Windows at effort 1 (the default): one per UNITS_PER_WINDOW units (over five
# times what a window frees), at most WINDOWS: none for a network of fewer units,
# which annealing alone settles (windows improved none of the small test networks,
# and importing OR-Tools takes half a second); and the deterministic time CP-SAT may
# spend on one window (its units of work are about a second of one core; most
# windows end sooner, at their optimum, and 0.02 instead of 0.05 cut ResNet-50's
# windows at 224x224 from ~90 to ~40 ms each, hop_bytes within 1%).
WINDOWS = 30
UNITS_PER_WINDOW = 256
WINDOW_DETERMINISTIC_TIME = 0.02
# Units freed per window at most (tiles are added while the bound holds).
WINDOW_UNITS = 48
WINDOW_TILES = 6


@dataclass
class SearchLog:
    """What the search did."""

    windows: int = 0
    improved: int = 0
    repaired: int = 0  # groups moved off shared cores (search.repair)
    timed_out: bool = False


def window_tiles(problem: Problem, seed_tile: int, occupancy: np.ndarray) -> list[int]:
    """The seed tile and its nearest tiles while their units stay under WINDOW_UNITS."""
    near = np.argsort(problem.hops[seed_tile, :], kind="stable").tolist()  # ties: by core
    chosen: list[int] = []
    units = 0
    for t in near:
        if len(chosen) >= WINDOW_TILES:
            break
        if chosen and units + occupancy[t] > WINDOW_UNITS:
            continue
        chosen.append(t)
        units += int(occupancy[t])
    return chosen


def solve_window(problem: Problem, tile_of: np.ndarray, window: list[int], seed: int
                 ) -> np.ndarray | None:
    """The optimal re-assignment of the window's units among its tiles (None if CP-SAT
    found nothing within its limit)."""
    from ortools.sat.python import cp_model

    inside = set(window)
    free = [u for u in range(len(tile_of)) if int(tile_of[u]) in inside]
    if not free:
        return None
    payload_ids = sorted({k for u in free for k in problem.incident[u]})
    if not payload_ids:
        return None
    scale = math.gcd(*(problem.payloads[k].bytes for k in payload_ids))
    hops = problem.hops
    model = cp_model.CpModel()
    x = {(u, t): model.new_bool_var(f"x{u}_{t}") for u in free for t in window}
    hint: dict[cp_model.IntVar, int] = {}
    for u in free:
        model.add_exactly_one(x[u, t] for t in window)
        for t in window:
            hint[x[u, t]] = int(tile_of[u] == t)
    if problem.load_cap:
        # g[group, t]: the group has a block on core t; the core's load is the sum.
        by_group: dict[int, list[int]] = {}
        for u in free:
            if problem.groups[u] >= 0:
                by_group.setdefault(int(problem.groups[u]), []).append(u)
        for t in window:
            present = []
            for g, members in by_group.items():
                var = model.new_bool_var(f"g{g}_{t}")
                hint[var] = int(any(tile_of[u] == t for u in members))
                for u in members:
                    model.add_implication(x[u, t], var)
                present.append((int(problem.group_load[g]), var))
            if not present:
                continue
            # A core shared by several groups keeps the cap; one group alone may exceed it.
            shared = model.new_bool_var(f"shared_{t}")
            hint[shared] = int(sum(hint[v] for _, v in present) > 1)
            model.add(sum(w * v for w, v in present) <= problem.load_cap).only_enforce_if(shared)
            model.add(sum(v for _, v in present) <= 1).only_enforce_if(shared.Not())
    # The blocks of one group on one core fill at most a core's crossbars.
    crossbars: dict[int, list[int]] = {}
    for u in free:
        if problem.groups[u] >= 0 and problem.xbars[u]:
            crossbars.setdefault(int(problem.groups[u]), []).append(u)
    for members in crossbars.values():
        if sum(int(problem.xbars[u]) for u in members) > problem.group_xbars:
            for t in window:
                model.add(sum(int(problem.xbars[u]) * x[u, t] for u in members)
                          <= problem.group_xbars)
    for t in window:
        if any(problem.demand[u] for u in free):
            model.add(sum(int(problem.demand[u]) * x[u, t] for u in free)
                      <= int(problem.tile_capacity[t]))
        if any(problem.tables[u] for u in free):
            model.add(sum(int(problem.tables[u]) * x[u, t] for u in free)
                      <= int(problem.tile_tables[t]))
    terms: list[tuple[int, cp_model.IntVar]] = []
    for k in payload_ids:
        p = problem.payloads[k]
        weight = p.bytes // scale
        free_others = [int(v) for v in p.others if int(tile_of[v]) in inside]
        reach = {}
        if free_others:
            for t in window:
                reach[t] = model.new_bool_var(f"r{k}_{t}")
                hint[reach[t]] = int(any(tile_of[v] == t for v in free_others))
                for v in free_others:
                    model.add_implication(x[v, t], reach[t])
        if int(tile_of[p.center]) not in inside:
            a = int(tile_of[p.center])
            terms += [(weight * int(hops[a, t]), reach[t]) for t in reach if hops[a, t]]
            continue
        fixed = sorted({int(tile_of[v]) for v in p.others} - inside)
        for s in window:
            coefficient = weight * int(hops[s, fixed].sum()) if fixed else 0
            if coefficient:
                terms.append((coefficient, x[p.center, s]))
            for t in reach:
                if t == s or not hops[s, t]:
                    continue
                y = model.new_bool_var(f"y{k}_{s}_{t}")
                model.add_bool_or([x[p.center, s].Not(), reach[t].Not(), y])
                hint[y] = hint[x[p.center, s]] * hint[reach[t]]
                terms.append((weight * int(hops[s, t]), y))
    if not terms:
        return None
    model.minimize(sum(c * v for c, v in terms))
    for var, value in hint.items():
        model.add_hint(var, value)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = WINDOW_DETERMINISTIC_TIME
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    result = tile_of.copy()
    for u in free:
        result[u] = next(t for t in window if solver.boolean_value(x[u, t]))
    return result


def local_cost(problem: Problem, tile_of: np.ndarray, units: list[int]) -> int:
    """hop_bytes of the payloads touching `units`."""
    ids = sorted({k for u in units for k in problem.incident[u]})
    return sum(payload_cost(problem.payloads[k], tile_of, problem.hops) for k in ids)


def payload_window(problem: Problem, tile_of: np.ndarray, k: int,
                   occupancy: np.ndarray) -> list[int]:
    """A window around payload k: its center's core, the farthest cores it reaches,
    and the cores nearest the center (occupied or empty), under WINDOW_UNITS."""
    p = problem.payloads[k]
    center = int(tile_of[p.center])
    reached = sorted({int(tile_of[v]) for v in p.others} - {center},
                     key=lambda c: (-int(problem.hops[center, c]), c))
    near = np.argsort(problem.hops[center, :], kind="stable").tolist()  # ties: by core
    chosen, units = [center], int(occupancy[center])
    for c in [*reached[:2], *near]:
        if len(chosen) >= WINDOW_TILES + 2:
            break
        if c in chosen or units + occupancy[c] > WINDOW_UNITS:
            continue
        chosen.append(c)
        units += int(occupancy[c])
    return chosen


def lns(problem: Problem, tile_of: np.ndarray, windows: int, rng: random.Random,
        log: SearchLog, deadline: float | None = None) -> tuple[np.ndarray, int]:
    """Up to `windows` CP-SAT windows from `tile_of`, alternating neighbourhood windows
    (seed cores in a shuffled round) and windows around costly payloads; stops when a
    round of windows found nothing. The result and the windows left."""
    seeds: list[int] = []
    quiet = 0  # windows in a row that changed nothing
    while windows > 0 and quiet <= problem.tiles // 4 + 8:
        if deadline is not None and time.perf_counter() > deadline:
            log.timed_out = True
            break
        occupancy = np.bincount(tile_of, minlength=problem.tiles)
        if windows % 2:
            costs = [payload_cost(p, tile_of, problem.hops) for p in problem.payloads]
            total = sum(costs)
            if not total:
                break
            k = rng.choices(range(len(costs)), weights=costs)[0]
            window = payload_window(problem, tile_of, k, occupancy)
        else:
            if not seeds:
                occupied = sorted({int(t) for t in tile_of})
                held = set(occupied)
                seeds = occupied + list(itertools.islice(
                    (t for t in range(problem.tiles) if t not in held), 4))
                rng.shuffle(seeds)
            window = window_tiles(problem, seeds.pop(), occupancy)
        windows -= 1
        log.windows += 1
        quiet += 1
        result = solve_window(problem, tile_of, window, rng.randrange(1 << 30))
        if result is None or not (result != tile_of).any():
            continue
        touched = [u for u in range(len(tile_of)) if int(tile_of[u]) in set(window)]
        if local_cost(problem, result, touched) < local_cost(problem, tile_of, touched):
            tile_of = result
            log.improved += 1
            quiet = 0
    return tile_of, windows


def window_budget(problem: Problem, effort: float) -> int:
    """The CP-SAT windows an effort buys: one per UNITS_PER_WINDOW units, at most
    WINDOWS."""
    return int(effort * min(WINDOWS, len(problem.names) // UNITS_PER_WINDOW))


def search(problem: Problem, start: np.ndarray, effort: float, seed: int,
           deadline: float | None = None) -> tuple[np.ndarray, SearchLog]:
    """CP-SAT windows alone from `start` (`window_budget` of them at most, at least one)."""
    log = SearchLog()
    tile_of, _ = lns(problem, start.copy(), max(1, window_budget(problem, effort)),
                     random.Random(seed), log, deadline)
    return tile_of, log
