"""Baseline placers: layer-order fills of the mesh and simulated annealing.

* `sequential`: units in layer order fill cores 0, 1, 2, ... (row-major over
  the mesh), as the research compilers place weights;
* `snake`: the same fill over tiles in boustrophedon order (rows alternate
  direction), so consecutive cores are always neighbours;
* `anneal`: pairwise moves and swaps of units between tiles, accepted by the
  Metropolis rule on a geometric temperature schedule, from a given start.

Annealing does a counted number of moves (`ANNEAL_MOVES` times the effort) so
its result does not depend on the machine's speed or load.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict

import numpy as np

from cimc.diagnostics import CimcError
from cimc.placement.problem import Problem

# Moves at effort 1 (the default): counted work, never measured time, so the
# placement is the same on any machine and under any load.
ANNEAL_MOVES = 300_000
# A small network needs no more than this many moves per unit: beyond it the
# search only re-visits placements (and would spend the whole budget on MNIST).
MOVES_PER_UNIT = 2_000


def anneal_moves(problem: Problem, effort: float) -> int:
    """The annealing moves an effort buys, capped by the problem size."""
    return min(int(effort * ANNEAL_MOVES), MOVES_PER_UNIT * len(problem.names))
# Start temperature as a fraction of the median cost change of a random move: low,
# since annealing refines a good start rather than exploring from scratch.
START_TEMPERATURE = 0.01


def core_order(problem: Problem, snake: bool) -> list[int]:
    """Cores in row-major order, or tile rows alternating direction (boustrophedon)."""
    t = problem.target
    tiles = list(range(t.tiles))
    if snake:
        tiles = sorted(tiles, key=lambda k: (k // t.mesh_x,
                                             k % t.mesh_x if (k // t.mesh_x) % 2 == 0
                                             else -(k % t.mesh_x)))
    return [c for k in tiles for c in range(k * t.cores_per_tile,
                                            min(t.cores, (k + 1) * t.cores_per_tile))]


def fill(problem: Problem, order: list[int]) -> np.ndarray:
    """Units in layer order into cores in `order`: a unit goes to the current core if
    its columns, tables and compute load fit, else to the next core. Returns each
    unit's core."""
    core_of = np.zeros(len(problem.names), dtype=np.int64)
    position, cols, tables, load = 0, 0, 0, 0
    held: set[int] = set()
    for u in range(len(problem.names)):
        group = int(problem.groups[u])
        extra = int(problem.group_load[group]) if group >= 0 and group not in held else 0
        while (cols + problem.demand[u] > problem.capacity
               or tables + problem.tables[u] > problem.table_budget
               or (problem.load_cap and load + extra > problem.load_cap)):
            position, cols, tables, load = position + 1, 0, 0, 0
            held = set()
            extra = int(problem.group_load[group]) if group >= 0 else 0
            if position >= len(order):
                needed = int(-(-problem.demand.sum() // problem.target.cols))
                raise CimcError(
                    f"the model needs {needed} crossbars on more than {len(order)} cores but "
                    f"target {problem.target.name!r} has "
                    f"{problem.target.cores * problem.target.crossbars_per_core} crossbars on "
                    f"{problem.target.cores} cores; choose a bigger target "
                    "(weights are not time-multiplexed)")
        core_of[u] = order[position]
        cols += int(problem.demand[u])
        tables += int(problem.tables[u])
        load += extra
        if group >= 0:
            held.add(group)
    return core_of


def fit_load_cap(problem: Problem) -> None:
    """Double `load_cap` until the layer-order fill fits the cores (a model that fills
    the chip cannot keep every core under the slowest layer's load); 0 if even
    the uncapped fill needs the spread."""
    while problem.load_cap:
        try:
            fill(problem, list(range(problem.target.cores)))
            return
        except CimcError:
            cap = problem.load_cap * 2
            problem.load_cap = 0 if cap >= int(problem.group_load.sum()) else cap


class Annealer:
    """Tile assignment with incremental hop_bytes under moves of one unit."""

    def __init__(self, problem: Problem, tile_of: np.ndarray) -> None:
        self.p = problem
        self.tile = [int(t) for t in tile_of]
        self.row = problem.hops.row
        # Plain dicts, not Counters: Counter's deletion and missing keys run Python code.
        self.counts: list[dict[int, int]] = [dict(Counter(self.tile[int(v)] for v in pl.others))
                                             for pl in problem.payloads]
        self.cols = np.bincount(tile_of, weights=problem.demand,
                                minlength=problem.tiles).astype(np.int64).tolist()
        self.tabs = np.bincount(tile_of, weights=problem.tables,
                                minlength=problem.tiles).astype(np.int64).tolist()
        # Python lists, not numpy arrays: the moves index single elements, which
        # numpy does several times slower.
        self.demand: list[int] = problem.demand.tolist()
        self.tables: list[int] = problem.tables.tolist()
        self.tile_capacity: list[int] = problem.tile_capacity.tolist()
        self.tile_tables: list[int] = problem.tile_tables.tolist()
        # Per core, created when touched: a big mesh has far more cores than units.
        self.members: defaultdict[int, list[int]] = defaultdict(list)
        for u, t in enumerate(self.tile):
            self.members[t].append(u)
        self.group = problem.groups.tolist()
        self.others: list[list[int]] = [pl.others.tolist() for pl in problem.payloads]
        self.group_load = problem.group_load.tolist()
        self.cap = problem.load_cap
        # Per core: blocks of each group it holds, and the sum of those groups' loads.
        self.held: defaultdict[int, dict[int, int]] = defaultdict(dict)
        self.load = [0] * problem.tiles
        for u, t in enumerate(self.tile):
            self._hold(u, t, 1)

    def move(self, u: int, b: int) -> int:
        """Move unit u to tile b; the change of hop_bytes."""
        tile, row, payloads, counts = self.tile, self.row, self.p.payloads, self.counts
        a = tile[u]
        delta = 0
        for k in self.p.incident[u]:
            pl = payloads[k]
            count = counts[k]
            if pl.center == u:
                ha, hb = row(a), row(b)
                delta += pl.bytes * sum(hb[c] - ha[c] for c in count)
            else:
                centre = row(tile[pl.center])
                left = count[a] - 1
                if left:
                    count[a] = left
                else:
                    del count[a]
                    delta -= pl.bytes * centre[a]
                there = count.get(b, 0)
                if not there:
                    delta += pl.bytes * centre[b]
                count[b] = there + 1
        tile[u] = b
        self.cols[a] -= self.demand[u]
        self.cols[b] += self.demand[u]
        self.tabs[a] -= self.tables[u]
        self.tabs[b] += self.tables[u]
        self.members[a].remove(u)
        self.members[b].append(u)
        self._hold(u, a, -1)
        self._hold(u, b, 1)
        return delta

    def _hold(self, u: int, core: int, step: int) -> None:
        g = self.group[u]
        if g < 0:
            return
        held = self.held[core]
        count = held.get(g, 0) + step
        if count == (1 if step > 0 else 0):
            self.load[core] += step * self.group_load[g]
        if count:
            held[g] = count
        else:
            del held[g]

    def load_fits(self, u: int, b: int, leaving: int = -1) -> bool:
        """Whether core b's compute load stays under the cap with u (for `leaving`)."""
        g = self.group[u]
        held = self.held[b]
        if not self.cap or g < 0 or held.get(g, 0) > (leaving >= 0 and self.group[leaving] == g):
            return True
        load = self.load[b] + self.group_load[g]
        if leaving >= 0 and self.group[leaving] >= 0 and held.get(self.group[leaving], 0) == 1:
            load -= self.group_load[self.group[leaving]]
        return load <= self.cap

    def room(self, u: int, b: int, leaving: int = -1) -> bool:
        """Whether tile b takes unit u (after unit `leaving` left it)."""
        d = self.demand[u] - (self.demand[leaving] if leaving >= 0 else 0)
        t = self.tables[u] - (self.tables[leaving] if leaving >= 0 else 0)
        return (self.cols[b] + d <= self.tile_capacity[b]
                and self.tabs[b] + t <= self.tile_tables[b] and self.load_fits(u, b, leaving))

    def partner_tile(self, u: int, rng: random.Random) -> int:
        """A core near one of u's partners (where moving u may pay off)."""
        incident = self.p.incident[u]
        if not incident or rng.random() < 0.3:
            base = self.tile[u]
        else:
            k = rng.choice(incident)
            pl = self.p.payloads[k]
            others = self.others[k]
            v = pl.center if pl.center != u else others[rng.randrange(len(others))]
            base = self.tile[v]
        if rng.random() < 0.5:
            return base
        t = self.p.target
        tile = base // t.cores_per_tile
        x = min(max(tile % t.mesh_x + rng.randint(-2, 2), 0), t.mesh_x - 1)
        y = min(max(tile // t.mesh_x + rng.randint(-2, 2), 0), t.mesh_y - 1)
        core = (y * t.mesh_x + x) * t.cores_per_tile + rng.randrange(t.cores_per_tile)
        return min(core, t.cores - 1)


def anneal(problem: Problem, start: np.ndarray, moves: int, seed: int,
           deadline: float | None = None, heat: float = 1.0, exchanges: float = 0.0
           ) -> tuple[np.ndarray, bool]:
    """Simulated annealing over core assignments from `start`: the best seen, and
    whether the wall-clock safety `deadline` cut the `moves` short. `heat` scales the start
    temperature; `exchanges` is the share of moves that swap the whole contents of
    two cores (off for the `anneal` placer)."""
    rng = random.Random(seed)
    state = Annealer(problem, start)
    n = len(problem.names)
    cost = problem.cost(start)
    best, best_cost = list(state.tile), cost
    if n < 2 or moves <= 0:
        return np.array(best, dtype=np.int64), False
    deltas: list[int] = []
    for _ in range(200):
        sample = _propose(state, rng, n, exchanges)
        if sample is not None:
            deltas.append(abs(sample[0]))
            _undo(state, sample[1])
    t0 = heat * START_TEMPERATURE * float(np.median([d for d in deltas if d] or [1]))
    t_end = t0 / 1000
    step, checked = 0, 0
    while step < moves:
        if deadline is not None and step >= checked:
            checked = step + 1000
            if time.perf_counter() > deadline:
                return np.array(best, dtype=np.int64), True
        temperature = t0 * (t_end / t0) ** (step / moves)
        proposal = _propose(state, rng, n, exchanges)
        if proposal is None:
            step += 1
            continue
        delta, undo, work = proposal
        step += work
        if delta <= 0 or rng.random() < math.exp(-delta / temperature):
            cost += delta
            if cost < best_cost:
                best, best_cost = list(state.tile), cost
        else:
            _undo(state, undo)
    return np.array(best, dtype=np.int64), False


def _propose(state: Annealer, rng: random.Random, n: int, exchanges: float = 0.0
             ) -> tuple[int, list[tuple[int, int]], int] | None:
    """Apply a random move, swap or exchange; (delta, undo list, moves it counts for:
    one, or one per unit an exchange moves) or None if nothing was done."""
    u = rng.randrange(n)
    a = state.tile[u]
    b = state.partner_tile(u, rng)
    if b == a:
        return None
    if exchanges and rng.random() < exchanges:
        per_tile = state.p.target.cores_per_tile
        # Cores of one tile are alike: exchanging them changes nothing.
        return _exchange(state, a, b) if a // per_tile != b // per_tile else None
    if state.room(u, b):
        return state.move(u, b), [(u, a)], 1
    demand = state.demand
    same = [v for v in state.members[b] if demand[v] == demand[u]]
    if not same:
        return None
    v = same[rng.randrange(len(same))]
    if not (state.room(u, b, v) and state.room(v, a, u)):
        return None
    delta = state.move(u, b)
    delta += state.move(v, a)
    return delta, [(v, b), (u, a)], 1


def _exchange(state: Annealer, a: int, b: int) -> tuple[int, list[tuple[int, int]], int]:
    """Swap the units of cores a and b (cores are alike, so capacity and load hold):
    a layer's blocks move together."""
    here, there = list(state.members[a]), list(state.members[b])
    delta = sum(state.move(u, b) for u in here) + sum(state.move(v, a) for v in there)
    undo = [(v, b) for v in reversed(there)] + [(u, a) for u in reversed(here)]
    return delta, undo, max(1, len(undo))


def _undo(state: Annealer, undo: list[tuple[int, int]]) -> None:
    for u, t in undo:
        state.move(u, t)


def curve_order(problem: Problem) -> list[int]:
    """Cores along a generalized Hilbert curve over the mesh: any run of consecutive
    tiles is compact in both directions (a layer spread over k cores spans about
    sqrt(k) x sqrt(k) tiles, not a row of k)."""
    t = problem.target
    path: list[tuple[int, int]] = []
    if t.mesh_x >= t.mesh_y:
        _curve(path, 0, 0, t.mesh_x, 0, 0, t.mesh_y)
    else:
        _curve(path, 0, 0, 0, t.mesh_y, t.mesh_x, 0)
    tiles = [y * t.mesh_x + x for x, y in path if y * t.mesh_x + x < t.tiles]
    return [c for k in tiles for c in range(k * t.cores_per_tile,
                                            min(t.cores, (k + 1) * t.cores_per_tile))]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _curve(path: list[tuple[int, int]], x: int, y: int, ax: int, ay: int, bx: int,
           by: int) -> None:
    """Visit the rectangle at (x, y) spanned by the vectors a (the long side, travelled
    from start to end) and b, appending cells to `path`."""
    width, height = abs(ax + ay), abs(bx + by)
    da, db = (_sign(ax), _sign(ay)), (_sign(bx), _sign(by))
    if height == 1 or width == 1:
        step, count = (da, width) if height == 1 else (db, height)
        for k in range(count):
            path.append((x + k * step[0], y + k * step[1]))
        return
    hx, hy, gx, gy = ax // 2, ay // 2, bx // 2, by // 2
    if 2 * width > 3 * height:  # long and thin: split along a only
        if abs(hx + hy) % 2 and width > 2:
            hx, hy = hx + da[0], hy + da[1]
        _curve(path, x, y, hx, hy, bx, by)
        _curve(path, x + hx, y + hy, ax - hx, ay - hy, bx, by)
        return
    if abs(gx + gy) % 2 and height > 2:
        gx, gy = gx + db[0], gy + db[1]
    _curve(path, x, y, gx, gy, hx, hy)
    _curve(path, x + gx, y + gy, ax, ay, bx - gx, by - gy)
    _curve(path, x + (ax - da[0]) + (gx - db[0]), y + (ay - da[1]) + (gy - db[1]),
           -gx, -gy, -(ax - hx), -(ay - hy))
