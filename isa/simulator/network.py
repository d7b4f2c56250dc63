"""The on-chip network: XY routes over the mesh and links busy until a time.

A message of b bytes occupies each link on its route for
ceil(b / link_bytes_per_cycle) cycles (serialization); its head advances one
link per `hop_latency` cycles, waiting where a link is still busy with an
earlier message. Without contention it arrives hops * hop_latency +
ceil(b / link_bytes_per_cycle) cycles after it leaves. Cores of one tile talk
without using a link.
"""

from __future__ import annotations

import math

from cimc.targets import Target

Link = tuple[tuple[int, int], tuple[int, int]]  # (from tile (x, y), to tile (x, y))


class Network:
    """Mesh links of one target and the time until which each is busy."""

    def __init__(self, target: Target):
        self.target = target
        self.busy_until: dict[Link, int] = {}

    def route(self, source: int, dest: int) -> list[Link]:
        """Links from core `source`'s tile to core `dest`'s: first along x, then y."""
        (x, y), (dx, dy) = self.target.tile_of(source), self.target.tile_of(dest)
        links = []
        while x != dx:
            step = 1 if dx > x else -1
            links.append(((x, y), (x + step, y)))
            x += step
        while y != dy:
            step = 1 if dy > y else -1
            links.append(((x, y), (x, y + step)))
            y += step
        return links

    def deliver(self, depart: int, source: int, dest: int, nbytes: int) -> int:
        """Arrival time of a message leaving at `depart`; books the links it uses."""
        serial = math.ceil(nbytes / self.target.link_bytes_per_cycle)
        time = depart
        for link in self.route(source, dest):
            start = max(time, self.busy_until.get(link, 0))
            self.busy_until[link] = start + serial
            time = start + self.target.hop_latency
        return time + serial
