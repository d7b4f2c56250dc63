"""A lower bound on hop_bytes: groups of payloads at their best spots on the mesh.

A payload costs `bytes * sum of hops(center core, c)` over the distinct cores c
holding its other units. Whatever the placement, units need crossbar columns
(not rounded), a core holds `capacity` of them, and at most `ring[d]` cores lie
d hops from any core (the most over the mesh; ring[0] counts the cores of one
tile, 0 hops apart). The payloads are split into two kinds of stars, each
bounded on its own (a partition, so the bounds add up):

* *receiver stars*: the payloads whose only other unit is v (a vector op's
  inputs, a two-block column's partial sums). Their centers must sit around
  v: v's tile holds `ring[0] * capacity` columns less v's own, the cores at d
  hops `ring[d] * capacity`. The cheapest assignment of the centers to rings,
  relaxed to fractions (most bytes per column nearest: the fractional
  knapsack, exact for the relaxation), bounds the star's cost.
* *center stars*: the other payloads of one center. Their other units share
  the center's tile (`ring[0] * capacity` columns less the center's, and
  `ring[0] * load_cap` compute load less the center's group's: a core holds
  groups of at most `load_cap` windows in all, docs/placement.md); what does
  not fit takes at least max(ceil(rest columns / capacity), ceil(rest load /
  load_cap)) further cores, the cheapest the nearest rings. How the center's
  tile is shared between the star's payloads is chosen optimally (a small
  two-resource knapsack over the numbers of further cores each payload
  takes); competition for rings d >= 1 is ignored.

Where a tile is one core (pimcomp), units of two groups whose loads add up to
more than `load_cap` can never share it (a vector op shares with nobody, a
group above the cap only with its own blocks): a receiver star's center that
cannot share v's core is at least one hop away, and a center star's payload
whose other units include such a unit takes at least one further core (as many
as its columns need). Without this the bound was 0 for chains of layers that each
fill a core, whose layer-order fill is optimal (mnist_cnn on pimcomp).

It still ignores that different stars compete for the same cores, so the gap
it leaves (1 - bound / hop_bytes) is an upper estimate of how far from optimal
a placement is.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cimc.placement.problem import Payload, Problem

# Up to this many tiles, rings are counted exactly (tiles^2 hops); beyond, bounded.
EXACT_RING_TILES = 4096


def rings(problem: Problem) -> list[int]:
    """ring[d]: the most cores at exactly d hops from one core, over all cores. On a
    mesh too big to count (tiles^2 hops), an upper bound, which keeps the bound a
    lower bound: a tile has at most 4d tiles d hops away."""
    hops = problem.hops
    most = hops.most()
    per, tiles = problem.target.cores_per_tile, -(-problem.tiles // problem.target.cores_per_tile)
    if tiles > EXACT_RING_TILES:
        return [per] + [min(4 * d * per, problem.tiles) for d in range(1, most + 1)]
    # The cores of one tile see the same rings: count per tile, each tile weighted by
    # its cores (isaac: 168 tiles of 12 cores), in one bincount over all tile pairs.
    first = np.arange(tiles) * per  # a core of each tile
    cores = np.minimum(per, problem.tiles - first)
    width = most + 1
    between = hops[first[:, None], first[None, :]].astype(np.int64)
    offsets = between + width * np.arange(tiles, dtype=np.int64)[:, None]
    counts = np.bincount(offsets.ravel(), weights=np.broadcast_to(cores, between.shape).ravel(),
                         minlength=tiles * width).reshape(-1, width)
    return [int(c) for c in counts.max(axis=0, initial=0)]


def nearest_cost(ring: list[int], cores: int) -> int:
    """Least sum of hops of `cores` cores outside a center's tile."""
    total = 0
    for d in range(1, len(ring)):
        if cores <= 0:
            break
        take = min(ring[d], cores)
        total += d * take
        cores -= take
    return total


def apart(problem: Problem, u: int, v: int, ring: list[int]) -> bool:
    """Whether units u and v can never be 0 hops apart: the tile is one core and their
    groups (distinct) together exceed what a shared core may carry."""
    if ring[0] != 1 or not problem.load_cap:
        return False
    g, h = int(problem.groups[u]), int(problem.groups[v])
    if g == h or g < 0 or h < 0:
        return False
    return int(problem.group_load[g]) + int(problem.group_load[h]) > problem.load_cap


def center_star(problem: Problem, star: list[Payload], ring: list[int], capacity: int) -> int:
    """Least cost of payloads sharing a center (module docstring)."""
    center = star[0].center
    # A core holds at most load_cap when shared, one group of any load alone: at most
    # the larger of the two.
    cap = max(problem.load_cap, int(problem.group_load.max())) if problem.load_cap else 0
    free = ring[0] * capacity - int(problem.columns[center])
    counted = {int(problem.groups[center])}  # groups whose load the tile already holds
    free_load = ring[0] * cap - (int(problem.group_load[problem.groups[center]])
                                 if cap and problem.groups[center] >= 0 else 0)
    front = {(0, 0): 0}  # (tile columns, tile load) used -> least cost so far
    for p in star:
        need = int(problem.columns[p.others].sum())
        groups = sorted({int(g) for g in problem.groups[p.others]} - counted - {-1})
        counted.update(groups)
        load = int(problem.group_load[groups].sum()) if cap and groups else 0
        most = max(-(-need // capacity), -(-load // cap) if cap else 0)
        # Other units that cannot share the center's core need further cores of their own.
        away = [int(v) for v in p.others if apart(problem, center, int(v), ring)]
        least = max(1, -(-int(problem.columns[away].sum()) // capacity)) if away else 0
        options = [(max(0, need - n * capacity), max(0, load - n * cap),
                    p.bytes * nearest_cost(ring, n)) for n in range(least, max(most, least) + 1)]
        merged: dict[tuple[int, int], int] = {}
        for (used, loaded), cost in front.items():
            for space, work, extra in options:
                key = (used + space, loaded + work)
                if key[0] <= free and key[1] <= free_load:
                    merged[key] = min(merged.get(key, cost + extra), cost + extra)
        front = {}
        for key in sorted(merged):  # drop states using more room for no less cost
            if not any(k[0] <= key[0] and k[1] <= key[1] and c <= merged[key]
                       for k, c in front.items()):
                front[key] = merged[key]
    return min(front.values())


def receiver_star(problem: Problem, v: int, star: list[Payload], ring: list[int],
                  capacity: int) -> float:
    """Least cost, relaxed to fractions, of the centers sending to the single unit v."""
    weight: dict[int, int] = defaultdict(int)
    for p in star:
        weight[p.center] += p.bytes
    room = [ring[0] * capacity - int(problem.columns[v])] + [r * capacity for r in ring[1:]]
    # Centers that can share v's core compete for the rings from 0, those that cannot
    # (each at least one hop away) for the rings from 1, each set on its own rings (a
    # relaxation: the sets' competition is ignored). A center without columns (a
    # vector op) takes no room: with v for free if it may share its core, else 1 hop.
    near = [c for c in weight if not apart(problem, c, v, ring)]
    away = [c for c in weight if apart(problem, c, v, ring)]
    cost = _rings_cost(problem, near, weight, list(room), 0)
    cost += sum(weight[c] for c in away if not problem.columns[c])
    return cost + _rings_cost(problem, away, weight, list(room), 1)


def _rings_cost(problem: Problem, centers: list[int], weight: dict[int, int],
                room: list[int], d: int) -> float:
    """The fractional knapsack of `centers` (those with columns) into the rings' `room`
    from ring d outwards, most bytes per column nearest."""
    sized = [c for c in centers if problem.columns[c] > 0]
    cost = 0.0
    for c in sorted(sized, key=lambda c: (-weight[c] / int(problem.columns[c]), c)):
        size = int(problem.columns[c])
        need = size
        while need > 0 and d < len(room):
            take = min(need, room[d])
            cost += d * weight[c] * take / size
            room[d] -= take
            need -= take
            if room[d] <= 0:
                d += 1
    return cost


def hop_bytes_bound(problem: Problem) -> int:
    """A lower bound on the hop_bytes of every feasible placement."""
    ring = rings(problem)
    capacity = int(problem.tile_capacity.max()) if problem.tiles else 0
    if not capacity:
        return 0
    centers: dict[int, list[Payload]] = defaultdict(list)
    receivers: dict[int, list[Payload]] = defaultdict(list)
    for p in problem.payloads:
        if len(p.others) == 1:
            receivers[int(p.others[0])].append(p)
        else:
            centers[p.center].append(p)
    total = sum(center_star(problem, centers[c], ring, capacity) for c in sorted(centers))
    relaxed = sum(receiver_star(problem, v, receivers[v], ring, capacity)
                  for v in sorted(receivers))
    return total + int(np.floor(relaxed + 1e-6))
