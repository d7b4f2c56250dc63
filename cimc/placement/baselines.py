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
from collections.abc import Callable, Hashable, Sequence
from typing import NoReturn

import numpy as np

from cimc.diagnostics import CimcError
from cimc.placement.problem import Problem

# Moves at effort 1 (the default) per unit of the problem, and at most: counted work,
# never measured time, so the placement is the same on any machine and under any
# load. The budget grows with the problem (ResNet-50 at 224x224: 1594 units, 128 k
# moves), so a small network places in a fraction of a second.
MOVES_PER_UNIT = 80
ANNEAL_MOVES = 300_000
# Fewer moves than this do not settle even a small network.
MIN_MOVES = 2_000


def anneal_moves(problem: Problem, effort: float) -> int:
    """The annealing moves an effort buys: proportional to the problem's units."""
    per_problem = min(ANNEAL_MOVES, max(MIN_MOVES, MOVES_PER_UNIT * len(problem.names)))
    return int(effort * per_problem)
# Start temperature as a fraction of the median cost change of a random move: low,
# since annealing refines a good start rather than exploring from scratch.
START_TEMPERATURE = 0.01
# Hops the annealer tabulates for all pairs of cores at most (a 2048-core mesh).
FULL_HOP_TABLE = 1 << 22


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


def fill(problem: Problem, order: list[int], units: list[int] | None = None) -> np.ndarray:
    """Units in layer order (or in the order `units` gives) into cores in `order`: a unit
    goes to the current core if its columns, tables and compute load fit, else to the
    next core. Returns each unit's core."""
    core_of = np.zeros(len(problem.names), dtype=np.int64)
    position, cols, tables, load = 0, 0, 0, 0
    held: set[int] = set()
    xbars: dict[int, int] = {}  # crossbars each group's blocks fill on the current core
    keys: set[Hashable] = set()  # the tables on the current core
    weights: set[Hashable] = set()  # the blocks' cells on the current core
    for u in (range(len(problem.names)) if units is None else units):
        group = int(problem.groups[u])
        extra = int(problem.group_load[group]) if group >= 0 and group not in held else 0
        while (cols + (0 if problem.weight_keys[u] in weights else problem.demand[u])
               > problem.capacity
               or tables + (0 if problem.table_keys[u] in keys else problem.tables[u])
               > problem.table_budget
               # A core shared by several groups keeps the cap; one group alone may
               # exceed it (its own blocks never count as sharing: problem.loads_fit).
               or (problem.load_cap and held - {group} and load + extra > problem.load_cap)
               or xbars.get(group, 0) + problem.xbars[u] > problem.group_xbars):
            position, cols, tables, load = position + 1, 0, 0, 0
            held = set()
            xbars = {}
            keys = set()
            weights = set()
            extra = int(problem.group_load[group]) if group >= 0 else 0
            if position >= len(order):
                _no_room(problem, len(order))
        core_of[u] = order[position]
        if problem.weight_keys[u] not in weights:
            cols += int(problem.demand[u])
            weights.add(problem.weight_keys[u])
        if problem.table_keys[u] not in keys:
            tables += int(problem.tables[u])
            keys.add(problem.table_keys[u])
        load += extra
        if group >= 0:
            held.add(group)
            xbars[group] = xbars.get(group, 0) + int(problem.xbars[u])
    return core_of


def _no_room(problem: Problem, cores: int) -> NoReturn:
    """The CimcError of a fill that ran out of cores: the tables' local memory when
    those exceed every core's, else the crossbars."""
    t = problem.target
    tables = sum(dict(zip(problem.table_keys, problem.tables.tolist(), strict=True)).values())
    if tables > problem.table_budget * cores:
        raise CimcError(
            f"the model's constant tables (requantization rows, lookup tables, gather "
            f"offsets) need about {tables} bytes of local memory but the {cores} cores of "
            f"target {t.name!r} keep {problem.table_budget} bytes each for them (half their "
            "local memory); choose a target with more cores or more local memory")
    columns = sum(dict(zip(problem.weight_keys, problem.demand.tolist(), strict=True)).values())
    raise CimcError(
        f"the model needs {-(-columns // t.cols)} crossbars on more than {cores} cores but "
        f"target {t.name!r} has {t.cores * t.crossbars_per_core} crossbars on {t.cores} "
        "cores; choose a bigger target (or one whose crossbars can be reprogrammed: the "
        "model then runs in phases)")


def payload_order(problem: Problem) -> list[int]:
    """Units in layer order, but the blocks of each group (one replica of a matvec)
    sorted by the partial-sum payload they add to (their column) and then by the
    activation payloads they read (their input slice): a fill then puts the blocks of
    one column that read one slice on one core, so both payloads reach fewer cores.
    (The layer order of blocks runs down each column through every slice in turn:
    VGG-11's 3x3 convs read slice i % 4 in row block i, so every core of a layer got
    every slice, and every activation went to all the layer's cores.)"""
    column = list(range(len(problem.names)))
    read: list[tuple[int, ...]] = [() for _ in problem.names]
    for p in problem.payloads:
        if p.kind == "psum":
            for v in p.others.tolist():
                column[v] = p.center
        else:
            for v in p.others.tolist():
                read[v] += (p.center,)
    units: list[int] = []
    start = 0
    groups = problem.groups.tolist()
    for u in range(1, len(groups) + 1):
        if u == len(groups) or groups[u] != groups[start] or groups[u] < 0:
            ordered = sorted(range(start, u), key=lambda v: (column[v], sorted(read[v]), v))
            # Each column's reducer in the middle of its blocks: the partial sums come
            # from both sides of it along the fill.
            for c in dict.fromkeys(column[v] for v in ordered):
                members = [v for v in ordered if column[v] == c and v != c]
                if len(members) + 1 == sum(column[v] == c for v in ordered):
                    members.insert(len(members) // 2, c)
                units += members
            start = u
    return units


def fit_load_cap(problem: Problem) -> None:
    """Double `load_cap` until the layer-order fill fits the cores (a model that fills
    the chip cannot keep every shared core under the cap); 0 if even
    the uncapped fill needs the spread. If it still does not fit, a group's blocks may
    share crossbars on a core (`group_xbars` unbounded): they take turns at every
    window, but a chip of few crossbars a core (one, on `edge`) has no other way."""
    while problem.load_cap:
        try:
            fill(problem, list(range(problem.target.cores)))
            return
        except CimcError:
            cap = problem.load_cap * 2
            problem.load_cap = 0 if cap >= int(problem.group_load.sum()) else cap
    try:
        fill(problem, list(range(problem.target.cores)))
    except CimcError:
        problem.group_xbars = max(problem.group_xbars, int(problem.xbars.sum()))


class Annealer:
    """Core assignment with incremental hop_bytes: the change of a move is computed
    without making it, so a rejected proposal costs no update and no undo.

    Python lists throughout, not numpy arrays: the moves index single elements, which
    numpy does several times slower."""

    def __init__(self, problem: Problem, tile_of: np.ndarray) -> None:
        self.p = problem
        self.tile = [int(t) for t in tile_of]
        hops = problem.hops
        # The whole hop table of a small mesh as lists (a C-level index per hop); the
        # row cache of CoreHops for a big one.
        self.row: Callable[[int], Sequence[int]] = hops.row
        if hops.size * hops.size <= FULL_HOP_TABLE:
            self.row = [hops.row(a) for a in range(hops.size)].__getitem__
        payloads = problem.payloads
        self.center = [pl.center for pl in payloads]
        self.bytes = [pl.bytes for pl in payloads]
        self.others: list[list[int]] = [pl.others.tolist() for pl in payloads]
        # Per payload: the cores its other units are on, with how many of them.
        self.counts: list[dict[int, int]] = [dict(Counter(self.tile[v] for v in others))
                                             for others in self.others]
        # Per unit: the payloads it is the center of, and those it is another unit of.
        self.centered: list[list[int]] = [[] for _ in self.tile]
        self.reached: list[list[int]] = [[] for _ in self.tile]
        for k, pl in enumerate(payloads):
            self.centered[pl.center].append(k)
            for v in self.others[k]:
                self.reached[v].append(k)
        self.incident = problem.incident
        self.incident_sets = [frozenset(k) for k in problem.incident]
        self.cols = np.bincount(tile_of, weights=problem.demand,
                                minlength=problem.tiles).astype(np.int64).tolist()
        self.tabs = np.bincount(tile_of, weights=problem.tables,
                                minlength=problem.tiles).astype(np.int64).tolist()
        self.demand: list[int] = problem.demand.tolist()
        self.tables: list[int] = problem.tables.tolist()
        self.tile_capacity: list[int] = problem.tile_capacity.tolist()
        self.tile_tables: list[int] = problem.tile_tables.tolist()
        # Units per (core, demand), created when touched (a big mesh has far more cores
        # than units): a swap partner of the same size is one index away, and a unit
        # leaves its list by trading places with the last (its position in `slot`).
        self.sizes = sorted(set(self.demand))
        self.members: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
        self.slot = [0] * len(self.tile)
        for u, t in enumerate(self.tile):
            same = self.members[t, self.demand[u]]
            self.slot[u] = len(same)
            same.append(u)
        self.group = problem.groups.tolist()
        self.group_load = problem.group_load.tolist()
        self.cap = problem.load_cap
        self.xbars: list[int] = problem.xbars.tolist()
        self.group_xbars = problem.group_xbars
        # Groups whose blocks could fill more than a core's crossbars: only their moves
        # need the check (few on pimcomp's 64 crossbars a core).
        totals = np.bincount(problem.groups[problem.groups >= 0],
                             weights=problem.xbars[problem.groups >= 0])
        limited = set(np.flatnonzero(totals > problem.group_xbars).tolist())
        self.limited = [g in limited for g in self.group]
        # Crossbars of each (core, group) its blocks fill.
        self.filled: defaultdict[tuple[int, int], int] = defaultdict(int)
        for u, t in enumerate(self.tile):
            self.filled[t, self.group[u]] += self.xbars[u]
        # Per core: blocks of each group it holds, and the sum of those groups' loads.
        self.held: defaultdict[int, dict[int, int]] = defaultdict(dict)
        self.load = [0] * problem.tiles
        for u, t in enumerate(self.tile):
            self._hold(u, t, 1)
        target = problem.target
        self.mesh_x, self.mesh_y = target.mesh_x, target.mesh_y
        self.per_tile, self.cores = target.cores_per_tile, target.cores

    def on(self, core: int) -> list[int]:
        """The units on `core`."""
        return [u for d in self.sizes for u in self.members.get((core, d), ())]

    def delta(self, u: int, b: int) -> int:
        """The change of hop_bytes if unit u moved to core b (nothing changes)."""
        tile, row, counts, size = self.tile, self.row, self.counts, self.bytes
        a = tile[u]
        change = 0
        centered = self.centered[u]
        if centered:
            ha, hb = row(a), row(b)
            for k in centered:
                change += size[k] * sum([hb[c] - ha[c] for c in counts[k]])
        center = self.center
        for k in self.reached[u]:
            count = counts[k]
            if count[a] == 1 or b not in count:
                centre = row(tile[center[k]])
                if count[a] == 1:
                    change -= size[k] * centre[a]
                if b not in count:
                    change += size[k] * centre[b]
        return change

    def move(self, u: int, b: int) -> None:
        """Move unit u to core b."""
        a = self.tile[u]
        counts = self.counts
        for k in self.reached[u]:
            count = counts[k]
            left = count[a] - 1
            if left:
                count[a] = left
            else:
                del count[a]
            count[b] = count.get(b, 0) + 1
        self.tile[u] = b
        d, t = self.demand[u], self.tables[u]
        self.cols[a] -= d
        self.cols[b] += d
        self.tabs[a] -= t
        self.tabs[b] += t
        same, slot = self.members[a, d], self.slot
        last = same.pop()
        if last != u:
            same[slot[u]] = last
            slot[last] = slot[u]
        there = self.members[b, d]
        slot[u] = len(there)
        there.append(u)
        g = self.group[u]
        self.filled[a, g] -= self.xbars[u]
        self.filled[b, g] += self.xbars[u]
        if g >= 0:  # the group leaves core a with its last block, arrives on b with its first
            held = self.held[a]
            blocks = held[g] - 1
            if blocks:
                held[g] = blocks
            else:
                del held[g]
                self.load[a] -= self.group_load[g]
            held = self.held[b]
            blocks = held.get(g, 0)
            if not blocks:
                self.load[b] += self.group_load[g]
            held[g] = blocks + 1

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
        """Whether core b's compute load stays under the cap with u (for `leaving`), or b
        holds u's group alone."""
        g = self.group[u]
        if not self.cap or g < 0:
            return True
        held = self.held[b]
        if held.get(g, 0) > (leaving >= 0 and self.group[leaving] == g):
            return True
        load, groups = self.load[b] + self.group_load[g], len(held) + 1
        if leaving >= 0 and self.group[leaving] >= 0 and held.get(self.group[leaving], 0) == 1:
            load -= self.group_load[self.group[leaving]]
            groups -= 1
        return load <= self.cap or groups <= 1

    def room(self, u: int, b: int, leaving: int = -1) -> bool:
        """Whether core b takes unit u (after unit `leaving` left it)."""
        d = self.demand[u] - (self.demand[leaving] if leaving >= 0 else 0)
        t = self.tables[u] - (self.tables[leaving] if leaving >= 0 else 0)
        if self.limited[u]:
            g = self.group[u]
            x = self.filled[b, g] + self.xbars[u] - (
                self.xbars[leaving] if leaving >= 0 and self.group[leaving] == g else 0)
            if x > self.group_xbars:
                return False
        return (self.cols[b] + d <= self.tile_capacity[b]
                and self.tabs[b] + t <= self.tile_tables[b] and self.load_fits(u, b, leaving))

    def partner_tile(self, u: int, draw: Callable[[], float]) -> int:
        """A core near one of u's partners (where moving u may pay off); `draw` gives
        uniform numbers in [0, 1)."""
        incident = self.incident[u]
        if not incident or draw() < 0.3:
            base = self.tile[u]
        else:
            k = incident[int(draw() * len(incident))]
            v = self.center[k]
            if v == u:
                others = self.others[k]
                v = others[int(draw() * len(others))]
            base = self.tile[v]
        if draw() < 0.5:
            return base
        tile = base // self.per_tile
        x = min(max(tile % self.mesh_x + int(draw() * 5) - 2, 0), self.mesh_x - 1)
        y = min(max(tile // self.mesh_x + int(draw() * 5) - 2, 0), self.mesh_y - 1)
        core = (y * self.mesh_x + x) * self.per_tile + int(draw() * self.per_tile)
        return min(core, self.cores - 1)


def anneal(problem: Problem, start: np.ndarray, moves: int, seed: int,
           deadline: float | None = None, heat: float = 1.0, exchanges: float = 0.0
           ) -> tuple[np.ndarray, bool]:
    """Simulated annealing over core assignments from `start`: the best seen, and
    whether the wall-clock safety `deadline` cut the `moves` short. `heat` scales the start
    temperature; `exchanges` is the share of moves that swap the whole contents of
    two cores (off for the `anneal` placer)."""
    draw = random.Random(seed).random
    state = Annealer(problem, start)
    n = len(problem.names)
    cost = problem.cost(start)
    best, best_cost = list(state.tile), cost
    if n < 2 or moves <= 0:
        return np.array(best, dtype=np.int64), False
    # Proposals that are never made (a limit below any change) sample the changes.
    deltas: list[int] = []
    for _ in range(200):
        sample = _step(state, draw, n, exchanges, -math.inf)
        if sample is not None:
            deltas.append(abs(sample[0]))
    t0 = heat * START_TEMPERATURE * float(np.median([d for d in deltas if d] or [1]))
    # Geometric cooling from t0 to t0 / 1000 over the moves.
    cooling = 1000.0 ** (-1.0 / moves)
    step, checked = 0, 0
    temperature = t0
    at_best = True  # the current placement is the best seen (`best` copied when left)
    while step < moves:
        if deadline is not None and step >= checked:
            checked = step + 1000
            if time.perf_counter() > deadline:
                break
        # Metropolis: accept a change d with probability exp(-d / T), i.e. when
        # d <= -T ln(r): the limit is drawn first, so a rejected move is never made.
        outcome = _step(state, draw, n, exchanges, -temperature * math.log(1.0 - draw()))
        work = 1
        if outcome is not None:
            delta, work, made = outcome
            if made:
                if delta > 0 and at_best:  # leaving the best: keep it (as before the move)
                    best = list(state.tile)
                    for u, a in reversed(made):
                        best[u] = a
                    at_best = False
                cost += delta
                if cost < best_cost:
                    best_cost, at_best = cost, True
        temperature *= cooling if work == 1 else cooling ** work
        step += work
    if at_best:
        best = list(state.tile)
    return np.array(best, dtype=np.int64), step < moves


def _step(state: Annealer, draw: Callable[[], float], n: int, exchanges: float,
          limit: float) -> tuple[int, int, list[tuple[int, int]]] | None:
    """Propose a random move, swap or exchange and make it if its change of hop_bytes is
    at most `limit`: (change, moves it counts for: one, or one per unit an exchange
    moves, and the (unit, previous core) of every unit moved, empty if not made), or
    None if nothing was proposed."""
    u = int(draw() * n)
    a = state.tile[u]
    b = state.partner_tile(u, draw)
    if b == a:
        return None
    if exchanges and draw() < exchanges:
        # Cores of one tile are alike: exchanging them changes nothing.
        return _exchange(state, a, b, limit) if a // state.per_tile != b // state.per_tile \
            else None
    if state.room(u, b):
        delta = state.delta(u, b)
        if delta > limit:
            return delta, 1, []
        state.move(u, b)
        return delta, 1, [(u, a)]
    same = state.members.get((b, state.demand[u]))
    if not same:
        return None
    v = same[int(draw() * len(same))]
    if not (state.room(u, b, v) and state.room(v, a, u)):
        return None
    if state.incident_sets[u].isdisjoint(state.incident[v]):
        delta = state.delta(u, b) + state.delta(v, a)  # independent moves: changes add
        if delta > limit:
            return delta, 1, []
        state.move(u, b)
    else:  # a payload of both: v's change depends on where u is
        delta = state.delta(u, b)
        state.move(u, b)
        delta += state.delta(v, a)
        if delta > limit:
            state.move(u, a)
            return delta, 1, []
    state.move(v, a)
    return delta, 1, [(u, a), (v, b)]


def _exchange(state: Annealer, a: int, b: int, limit: float
              ) -> tuple[int, int, list[tuple[int, int]]]:
    """Swap the units of cores a and b (cores are alike, so capacity and load hold): a
    layer's blocks move together. Undone if the change exceeds `limit`."""
    here, there = state.on(a), state.on(b)
    delta = 0
    for u in here:
        delta += state.delta(u, b)
        state.move(u, b)
    for v in there:
        delta += state.delta(v, a)
        state.move(v, a)
    made = [(u, a) for u in here] + [(v, b) for v in there]
    if delta > limit:
        for u, c in reversed(made):
            state.move(u, c)
        made = []
    return delta, max(1, len(here) + len(there)), made


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
