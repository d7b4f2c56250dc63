"""The band geometry of a `gather` (data movement: Pad, Slice, Split, Transpose, the
channel shuffle, Concat on any axis, Resize nearest, reshapes that change the NHWC
byte order).

A gather's index [OH, OW*N] gives, for every byte of an output row (NHWC), the
byte it copies: `base_k + offset` in the NHWC storage of operand k (`base_k` the
sizes of the operands before it), or -1 for the fill code. So output row `oy`
reads, of each operand, the input rows in [lo, hi]. The core keeps a *band* per
operand, the rows [lo'(oy), hi'(oy)] where hi' is the running maximum of hi and
lo' the smallest lo of this and later rows (both never decrease, so rows arrive
in order, each once, and leave the band in order); rows no output row reads are
never received. Per output row the band's kept rows move up (one `copy`), the new
rows are received into their slots, and one `vgather` copies the output row out
of the bands through a table of band offsets (or one `fill` when the row reads
nothing). Tables repeat (a channel shuffle, a pad's inner rows, a nearest resize
read their bands alike), so the distinct ones are kept once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op


@dataclass(frozen=True)
class OperandStep:
    """One operand's band refresh for an output row: slots [0, kept) take the rows
    `moved` slots further down; `fills` (slot, input row) are received."""

    moved: int
    kept: int
    fills: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class GatherStep:
    oy: int
    operands: tuple[OperandStep, ...]
    table: int  # index into Geometry.tables; -1: the row is all fill


@dataclass(frozen=True)
class Geometry:
    sizes: tuple[tuple[int, int, int], ...]  # (H, W, C) of each operand
    slots: tuple[int, ...]  # band rows of each operand
    offsets: tuple[int, ...]  # byte offset of each operand's band in the band area
    steps: tuple[GatherStep, ...]  # per output row, in order
    tables: tuple[np.ndarray, ...]  # distinct i32 tables of band offsets (-1: fill)

    @property
    def band_bytes(self) -> int:
        return sum(s * w * c for s, (_, w, c) in zip(self.slots, self.sizes, strict=True))

    def transient(self, rows: list[int]) -> bool:
        """Whether output rows `rows` keep no band row from one to the next (then the
        band can live in scratch: cimc.analysis.window.transient)."""
        wanted = set(rows)
        return all(part.kept == 0 for step in self.steps if step.oy in wanted
                   for part in step.operands)

    def received(self, k: int, rows: list[int]) -> list[list[int]]:
        """Input rows of operand k received per output row of `rows`, in order."""
        by_row = {s.oy: s for s in self.steps}
        return [[iy for _, iy in by_row[oy].operands[k].fills] for oy in rows]


_CACHE: dict[tuple, Geometry] = {}


def geometry(module: Module, op: Op) -> Geometry:
    """The band geometry of gather `op` (cached per index constant)."""
    index = module.constants[op.inputs[-1]]
    key = (op.name, tuple(op.inputs), index.shape, hash(index.tobytes()),
           tuple(module.values[v].shape for v in op.inputs[:-1]))
    found = _CACHE.get(key)
    if found is None or len(_CACHE) > 256:
        if len(_CACHE) > 256:
            _CACHE.clear()
        found = _CACHE[key] = _build(module, op, index)
    return found


def _build(module: Module, op: Op, index: np.ndarray) -> Geometry:
    sizes = tuple(image_dims(module.values[v]) for v in op.inputs[:-1])
    oh = index.shape[0]
    table = index.astype(np.int64)
    bases = np.cumsum([0, *(h * w * c for h, w, c in sizes)])
    operand = np.searchsorted(bases, table, side="right") - 1
    lows, highs = [], []
    for k, (h, w, c) in enumerate(sizes):
        mine = (table >= 0) & (operand == k)
        iy = np.where(mine, (table - bases[k]) // (w * c), -1)
        hi = iy.max(axis=1) if iy.size else np.full(oh, -1)
        lo = np.where(mine, iy, h).min(axis=1) if iy.size else np.full(oh, h)
        hi = np.maximum.accumulate(hi)  # rows arrive in order
        lo = np.minimum.accumulate(lo[::-1])[::-1]  # and leave in order
        lo = np.minimum(lo, hi + 1)
        lows.append(lo)
        highs.append(hi)
    slots = tuple(int(max(0, (hi - lo + 1).max(initial=0))) for lo, hi in zip(lows, highs,
                                                                                strict=True))
    offsets = tuple(int(v) for v in np.cumsum([0, *(s * w * c for s, (_, w, c) in
                                                     zip(slots, sizes, strict=True))])[:-1])
    steps: list[GatherStep] = []
    tables: list[np.ndarray] = []
    seen: dict[bytes, int] = {}
    for oy in range(oh):
        parts = []
        band = np.full(table.shape[1], -1, dtype=np.int64)
        for k, (_, w, c) in enumerate(sizes):
            lo, hi = int(lows[k][oy]), int(highs[k][oy])
            plo, phi = (int(lows[k][oy - 1]), int(highs[k][oy - 1])) if oy else (lo, -1)
            kept = max(0, phi - lo + 1) if oy else 0
            moved = lo - plo if kept else 0
            fills = tuple((iy - lo, iy) for iy in range(max(lo, phi + 1), hi + 1))
            parts.append(OperandStep(moved, kept, fills))
            mine = (table[oy] >= 0) & (operand[oy] == k)
            band[mine] = offsets[k] + table[oy][mine] - bases[k] - lo * w * c
        if (band < 0).all():
            number = -1
        else:
            key = band.tobytes()
            if key not in seen:
                seen[key] = len(tables)
                tables.append(band.astype(np.int32))
            number = seen[key]
        steps.append(GatherStep(oy, tuple(parts), number))
    return Geometry(sizes, slots, offsets, tuple(steps), tuple(tables))
