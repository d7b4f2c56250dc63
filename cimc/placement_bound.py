"""A lower bound on hop_bytes: every payload alone, at its best spot on the mesh.

A payload costs `bytes * sum of hops(center tile, t)` over the distinct tiles t
holding its other units. Whatever the placement, those units need crossbar
columns (not rounded): the center's tile can hold at most one tile's capacity (less the
center's own demand) of them for free, and every other tile at most one
tile's capacity. So they occupy at least ceil(rest / capacity) further
tiles, and the cheapest such tiles are the nearest: at most `ring[d]` tiles lie
d hops from any tile (the most over all tiles of the mesh). Filling rings
d = 1, 2, ... in order gives the least possible cost of the payload; the sum
over payloads bounds hop_bytes from below, since each payload's cost is at
least its own minimum. (It ignores that payloads compete for the same near
tiles, so the gap it leaves is an upper estimate of how far from optimal a
placement is.)
"""

from __future__ import annotations

import numpy as np

from cimc.placement import Problem


def rings(problem: Problem) -> list[int]:
    """ring[d]: the most cores at exactly d hops from one core, over all cores."""
    hops = problem.hops
    most = int(hops.max()) if hops.size else 0
    return [int(max(np.count_nonzero(hops[t] == d) for t in range(problem.tiles)))
            for d in range(most + 1)]


def payload_bound(problem: Problem, k: int, ring: list[int], tile_capacity: int) -> int:
    p = problem.payloads[k]
    # The center's core and the other cores of its tile (ring[0] in all) are free.
    rest = (int(problem.columns[p.others].sum()) - ring[0] * tile_capacity
            + int(problem.columns[p.center]))
    hops = 0
    for d in range(1, len(ring)):
        if rest <= 0:
            break
        tiles = min(ring[d], -(-rest // tile_capacity))
        hops += d * tiles
        rest -= tiles * tile_capacity
    return p.bytes * hops


def hop_bytes_bound(problem: Problem) -> int:
    """A lower bound on the hop_bytes of every feasible placement."""
    ring = rings(problem)
    capacity = int(problem.tile_capacity.max()) if problem.tiles else 0
    return sum(payload_bound(problem, k, ring, capacity) for k in range(len(problem.payloads)))
