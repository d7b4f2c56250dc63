"""Sliding windows over NHWC images in core-local memory: the loops shared by
matvec (convolution, gemm) and pooling code.

A core keeps a *band*: the `kh` input rows one output row needs, each padded
left and right to `Wp = pl + W + pr` pixels, the padding filled once with the
pad value. Per output row the band rows are loaded from global memory (or
filled with the pad value where the window hangs over the top or bottom
edge); per output pixel the window is gathered from the band with `copy` in
row order `(group, ky, kx, c)` (or read in place when it is contiguous).

Registers: r1 global address of the first band row, r2 band address of the
current pixel, r3 global address of the current output pixel, r4/r5 pixel
counter/limit, r6/r7 row counter/limit, r8 global address of the output row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cimc.dialect.chip import image_dims
from cimc.ir.module import Module, Op


@dataclass(frozen=True)
class Window:
    """Geometry of a windowed op: input [H, W, C] -> output [OH, OW, N]."""

    h: int
    w: int
    c: int
    oh: int
    ow: int
    n: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    pb: int
    pr: int
    groups: int = 1

    @classmethod
    def of(cls, module: Module, op: Op) -> Window:
        h, w, c = image_dims(module.values[op.inputs[0]])
        oh, ow, n = image_dims(module.values[op.outputs[0]])
        a = op.attrs
        pt, pl, pb, pr = a["pads"]
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["strides"], a["dilations"]
        return cls(h, w, c, oh, ow, n, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr,
                   int(a.get("group", 1)))

    @property
    def wp(self) -> int:
        return self.pl + self.w + self.pr

    @property
    def row_bytes(self) -> int:
        return self.w * self.c

    @property
    def band_bytes(self) -> int:
        return self.kh * self.wp * self.c

    @property
    def window_bytes(self) -> int:
        return self.kh * self.kw * self.c

    @property
    def contiguous(self) -> bool:
        """The window already lies in the band in (ky, kx, c) order."""
        return self.groups == 1 and self.dw == 1 and (self.kh == 1 or self.kw == self.wp)

    def interior(self) -> tuple[int, int]:
        """Output rows [lo, hi) whose windows stay inside the input rows."""
        lo = min(-(-self.pt // self.sh), self.oh)
        top = self.h - 1 + self.pt - (self.kh - 1) * self.dh
        hi = top // self.sh + 1 if top >= 0 else 0
        return lo, max(lo, min(hi, self.oh))

    def gather(self, win: int, rows: tuple[int, int] | None = None) -> list[str]:
        """Copy the window at r2 into local address `win` in (group, ky, kx, c) order;
        only window rows [lo, hi) when `rows` is given (the rows of a core's blocks)."""
        if self.contiguous:
            return []
        c, wp = self.c, self.wp
        lo, hi = rows if rows is not None else (0, self.window_bytes)
        if self.groups == 1 and self.dw == 1:
            if (lo, hi) == (0, self.window_bytes):
                return [f"copy {win}(r0), 0(r2), {self.kw * c}, {self.kh}, {self.kw * c}, "
                        f"{wp * c}"]
            row = self.kw * c  # one kernel row lies contiguous in the band
            return [f"copy {win + a}(r0), {ky * wp * c + a - ky * row}(r2), {b - a}, 1, "
                    f"{b - a}, {b - a}"
                    for ky in range(self.kh)
                    for a, b in [(max(lo, ky * row), min(hi, (ky + 1) * row))] if a < b]
        if self.groups == 1:
            return [f"copy {win + ky * self.kw * c}(r0), {ky * wp * c}(r2), {c}, {self.kw}, "
                    f"{c}, {self.dw * c}" for ky in range(self.kh)
                    if ky * self.kw * c < hi and (ky + 1) * self.kw * c > lo]
        cg = c // self.groups
        taps = self.kh * self.kw
        first, last = lo // (taps * cg), -(-hi // (taps * cg))  # the groups [first, last)
        return [f"copy {win + (first * taps + ky * self.kw + kx) * cg}(r0), "
                f"{ky * wp * c + kx * self.dw * c + first * cg}(r2), "
                f"{cg}, {last - first}, {taps * cg}, {cg}"
                for ky in range(self.kh) for kx in range(self.kw)]

    def gather_sizes(self, rows: tuple[int, int] | None = None) -> list[int]:
        """Bytes of each copy `gather` writes (len x reps), in order."""
        c = self.c
        if self.contiguous:
            return []
        lo, hi = rows if rows is not None else (0, self.window_bytes)
        if self.groups == 1 and self.dw == 1:
            if (lo, hi) == (0, self.window_bytes):
                return [self.kw * c * self.kh]
            row = self.kw * c
            return [b - a for ky in range(self.kh)
                    for a, b in [(max(lo, ky * row), min(hi, (ky + 1) * row))] if a < b]
        if self.groups == 1:
            return [c * self.kw for ky in range(self.kh)
                    if ky * self.kw * c < hi and (ky + 1) * self.kw * c > lo]
        cg = c // self.groups
        taps = self.kh * self.kw
        first, last = lo // (taps * cg), -(-hi // (taps * cg))
        return [cg * (last - first)] * taps

    def gathered_bytes(self, rows: tuple[int, int] | None = None) -> int:
        """Bytes `gather` copies for window rows [lo, hi) (all rows when None)."""
        if self.contiguous:
            return 0
        lo, hi = rows if rows is not None else (0, self.window_bytes)
        if self.groups == 1 and self.dw == 1:
            return hi - lo
        if self.groups == 1:
            row = self.kw * self.c
            return row * sum(1 for ky in range(self.kh) if ky * row < hi and (ky + 1) * row > lo)
        per = self.kh * self.kw * (self.c // self.groups)
        return per * (-(-hi // per) - lo // per)


def sweep(win: Window, band: int, pad: int, gin: int, gout: int, label: str,
          body: Callable[[], list[str]]) -> list[str]:
    """Code running `body` once per output pixel (r2, r3 set), loading bands per row."""
    lines = [f"fill {band}(r0), {pad}, {win.band_bytes}"]
    out_row = win.ow * win.n
    lo, hi = win.interior()

    def pixels(tag: str) -> list[str]:
        code = [f"li r2, {band}", "addi r3, r8, 0", "li r4, 0", f"li r5, {win.ow}", f"{tag}:"]
        code += body()
        code += [f"addi r2, r2, {win.sw * win.c}", f"addi r3, r3, {win.n}", "addi r4, r4, 1",
                 f"blt r4, r5, {tag}"]
        return code

    def edge_row(oy: int) -> list[str]:
        code = []
        for ky in range(win.kh):
            iy = oy * win.sh - win.pt + ky * win.dh
            dst = band + (ky * win.wp + win.pl) * win.c
            if 0 <= iy < win.h:
                code += [f"li r1, {gin + iy * win.row_bytes}",
                         f"ld {dst}(r0), 0(r1), {win.row_bytes}"]
            else:
                code.append(f"fill {dst}(r0), {pad}, {win.row_bytes}")
        return code + [f"li r8, {gout + oy * out_row}"] + pixels(f"{label}_y{oy}")

    for oy in range(lo):
        lines += edge_row(oy)
    if hi > lo:
        first = gin + (lo * win.sh - win.pt) * win.row_bytes
        lines += [f"li r6, {lo}", f"li r7, {hi}", f"li r1, {first}",
                  f"li r8, {gout + lo * out_row}", f"{label}_rows:"]
        for ky in range(win.kh):
            dst = band + (ky * win.wp + win.pl) * win.c
            lines.append(f"ld {dst}(r0), {ky * win.dh * win.row_bytes}(r1), {win.row_bytes}")
        lines += pixels(f"{label}_px")
        lines += [f"addi r1, r1, {win.sh * win.row_bytes}", f"addi r8, r8, {out_row}",
                  "addi r6, r6, 1", f"blt r6, r7, {label}_rows"]
    for oy in range(hi, win.oh):
        lines += edge_row(oy)
    return lines


@dataclass(frozen=True)
class BandStep:
    """How the band is refreshed for output row `oy`: slots `[0, kept)` take the rows
    that were `moved` slots further down (one copy), the others are filled:
    `fills` = (slot, input row), input row None for a padding row."""

    oy: int
    moved: int
    kept: int
    fills: tuple[tuple[int, int | None], ...]


def band_plan(win: Window, out_rows: list[int]) -> list[BandStep]:
    """The band refreshes for output rows `out_rows` (increasing) of one unit. Rows
    shared with the previous output row stay (moved up) when rows are consecutive
    (no dilation); everything else is received (or padded) afresh."""
    steps = []
    prev: int | None = None
    for oy in out_rows:
        first = oy * win.sh - win.pt
        moved = kept = 0
        if prev is not None and win.dh == 1:
            d = first - (prev * win.sh - win.pt)
            if 0 < d < win.kh:
                moved, kept = d, win.kh - d
            elif d == 0:
                moved, kept = 0, win.kh
        fills = []
        for slot in range(kept, win.kh):
            iy = first + slot * win.dh
            fills.append((slot, iy if 0 <= iy < win.h else None))
        steps.append(BandStep(oy, moved, kept, tuple(fills)))
        prev = oy
    return steps


def transient(win: Window, steps: list[BandStep]) -> bool:
    """Whether the band holds nothing from one of its output rows to the next: no
    padding columns (those are filled once) and every row received or padded afresh.
    Such a band can live in its part's scratch instead of for the whole run: an
    unrolled recurrent layer's hundreds of one-row gemms would otherwise keep one each."""
    return win.pl == win.pr == 0 and all(step.kept == 0 for step in steps)


def received_rows(win: Window, out_rows: list[int]) -> list[int]:
    """Input rows a unit computing `out_rows` receives, in order (once per band fill)."""
    return [iy for step in band_plan(win, out_rows) for _, iy in step.fills if iy is not None]
