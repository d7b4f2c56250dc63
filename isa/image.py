"""The crossbar programming image: what every crossbar cell holds.

For each core the image gives the cell contents of its crossbars (uint8
`[crossbars, rows, cols]`, values in [0, 2^cell_bits)) and its crossbar
groups: group id -> a signed `weight_bits`-bit matrix block W[rows_used,
cols_used], stored bit-sliced over S = ceil(weight_bits / cell_bits) column
ranges (slices). Storage is offset-binary: u = w + 2^(weight_bits-1) split into
cell_bits-bit digits, slice s holding digit s (s = 0 least significant).
A core's cell array may hold fewer crossbars than the target has (the rest are
unprogrammed, all zero).

Phases: a model larger than the chip runs in phases, with the crossbars
reprogrammed (`wprog`) between them. Each group has a phase p >= 0 (default
0). Groups of one phase never share a cell; groups of different phases may.
An image has P phases, P = 1 + the largest phase of any group; with P > 1 it
is *phased*: its crossbars start unprogrammed and only `wprog g` writes group
g's cells into them. In memory, the cells of phase-0 groups are in the cell
array (as in a one-phase image) and those of later phases' groups in
`CoreImage.stored`, each group's own digit planes, since they may share cells
with other groups; `CoreImage.group_digits` reads either.

File format (`.img`), all integers little-endian, byte-identical for equal
content; only the cells of groups are stored (the others are unprogrammed, zero):

    magic     8 bytes  b"CIMCIMG2" (format 2; format 1, which stored every cell
                       of the array as a byte, is refused with a request to
                       recompile)
    length    uint32   byte length of the header that follows
    header    UTF-8 JSON, keys sorted, no spaces:
              {"cell_bits": b, "rows": R, "cols": C,
               "cores": [{"core": n, "crossbars": k,
                          "groups": [{"id": g, "weight_bits": w, "rows_used": r,
                                      "cols_used": c, "phase": p,
                                      "slices": [[crossbar, row, col], ...]}, ...]},
                         ...],
               "phases": P}
              cores ascending by number, groups ascending by id; "phases" and
              every group's "phase" only in a phased image (P > 1), so a
              one-phase image is the same file as before phases existed
    cells     the cell values of every slice (cores, groups and slices in header
              order; a slice's rows_used x cols_used cells in C order), packed b
              bits a value into bytes, least significant bits first, the last
              byte padded with zero bits: one byte per 8-bit weight when b
              divides 8
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cimc.diagnostics import CimcError
from cimc.outputs import write_atomic

MAGIC = b"CIMCIMG2"
# Magics of earlier formats, refused with a request to regenerate the image.
OLD_MAGICS = (b"CIMCIMG1",)
# Cell values packed per step (and unpacked per step where cell_bits does not divide
# 8): bounds the copies, and the bit arrays numpy makes (8 bytes a value), to this many.
PACK_CHUNK = 1 << 20


@dataclass(frozen=True)
class Slice:
    """Where one digit plane of a group sits: crossbar index and top-left cell."""

    crossbar: int
    row: int
    col: int


@dataclass(frozen=True)
class CrossbarGroup:
    """A bit-sliced signed weight block W[rows_used, cols_used] on one core."""

    weight_bits: int
    rows_used: int
    cols_used: int
    slices: tuple[Slice, ...]
    phase: int = 0  # the phase whose weights it holds (module docstring)

    def digits(self, cells: np.ndarray) -> np.ndarray:
        """The group's digit planes, uint8 [S, rows_used, cols_used], from a cell array."""
        return np.stack(
            [
                cells[s.crossbar, s.row : s.row + self.rows_used, s.col : s.col + self.cols_used]
                for s in self.slices
            ]
        )

    def crossbars(self) -> tuple[int, ...]:
        """Distinct crossbars the group occupies, ascending."""
        return tuple(sorted({s.crossbar for s in self.slices}))

    @property
    def cells(self) -> int:
        """Cells the group occupies: rows_used x cols_used x slices."""
        return self.rows_used * self.cols_used * len(self.slices)

    def stored_bytes(self, cell_bits: int) -> int:
        """Bytes of its cells packed cell_bits bits a cell, as the image stores them and
        `wprog` moves them: ceil(cells * cell_bits / 8)."""
        return -(-self.cells * cell_bits // 8)

    def rectangles(self) -> list[tuple[int, int, int, int, int]]:
        """The cells of each slice as (crossbar, row0, row1, col0, col1), ends exclusive."""
        return [(s.crossbar, s.row, s.row + self.rows_used, s.col, s.col + self.cols_used)
                for s in self.slices]

    def shares_cells(self, other: CrossbarGroup) -> bool:
        """Whether the two groups have a cell in common (an empty group has none)."""
        return any(x == y and r0 < s1 and s0 < r1 and c0 < d1 and d0 < c1
                   for x, r0, r1, c0, c1 in self.rectangles()
                   for y, s0, s1, d0, d1 in other.rectangles())


def slice_count(weight_bits: int, cell_bits: int) -> int:
    """Slices one weight occupies: ceil(weight_bits / cell_bits)."""
    return -(-weight_bits // cell_bits)


def program_group(weights: np.ndarray, weight_bits: int, cell_bits: int) -> np.ndarray:
    """Bit-slice a signed integer block W[rows, cols] into offset-binary cell digits.

    Returns uint8 [S, rows, cols]; plane s holds digit s of w + 2^(weight_bits-1).
    """
    w = np.asarray(weights)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"weights must be a 2-D integer array, got {w.dtype} {w.shape}")
    low, high = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    if w.size and (w.min() < low or w.max() > high):
        raise ValueError(f"weights outside the {weight_bits}-bit range [{low}, {high}]")
    u = w.astype(np.int64) - low
    mask = (1 << cell_bits) - 1
    planes = [(u >> (s * cell_bits)) & mask for s in range(slice_count(weight_bits, cell_bits))]
    return np.stack(planes).astype(np.uint8)


def group_weights(digits: np.ndarray, weight_bits: int, cell_bits: int) -> np.ndarray:
    """Signed int64 weights W from digit planes [S, rows, cols]; inverts program_group."""
    u = np.zeros(digits.shape[1:], dtype=np.int64)
    for s in range(digits.shape[0]):
        u += digits[s].astype(np.int64) << (s * cell_bits)
    return u - (1 << (weight_bits - 1))


@dataclass
class CoreImage:
    """The crossbars of one core: cell array [crossbars, rows, cols] (the cells of phase-0
    groups), groups by id, and the digit planes of later phases' groups."""

    cells: np.ndarray
    groups: dict[int, CrossbarGroup] = field(default_factory=dict)
    # Group id -> uint8 digit planes [S, rows_used, cols_used] of each group of phase > 0:
    # they may share cells with groups of other phases, so the cell array cannot hold them.
    stored: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    # Cell rectangles (row0, row1, col0, col1) taken by groups, by phase and crossbar;
    # rebuilt when absent. Rectangles, not a cell mask: a mask as large as the cells,
    # copied per group, made building a ResNet-50 image slow and doubled its memory.
    _taken: dict[int, dict[int, list[tuple[int, int, int, int]]]] | None = field(
        default=None, repr=False, compare=False)

    def add_group(
        self,
        group: int,
        weights: np.ndarray,
        weight_bits: int,
        cell_bits: int,
        slices: list[Slice] | None = None,
        phase: int = 0,
    ) -> CrossbarGroup:
        """Program W as group `group` of `phase`; slices=None places each slice first-fit
        on cells free in that phase.

        ValueError (nothing changed) if a slice does not fit or overlaps another group of
        the same phase. Groups of other phases may share its cells (module docstring).
        """
        if group in self.groups:
            raise ValueError(f"crossbar group {group} is already defined")
        if isinstance(phase, bool) or not isinstance(phase, int) or phase < 0:
            raise ValueError(f"group {group}: phase must be an integer >= 0, got {phase!r}")
        digits = program_group(weights, weight_bits, cell_bits)
        rows_used, cols_used = digits.shape[1:]
        if slices is not None and len(slices) != digits.shape[0]:
            raise ValueError(f"group {group} needs {digits.shape[0]} slices, got {len(slices)}")
        taken = self._taken_rectangles(phase)
        places: list[Slice] = []
        for index in range(digits.shape[0]):
            where = (slices[index] if slices is not None
                     else self._free_place(places, rows_used, cols_used, phase))
            self._check_fits(group, rows_used, cols_used, where)
            if _overlaps(taken, places, rows_used, cols_used, where):
                raise ValueError(f"group {group}: slice {where} overlaps cells already in use"
                                 + (f" in phase {phase}" if phase else ""))
            places.append(where)
        for plane, where in zip(digits, places, strict=True):
            if phase == 0:
                self.cells[where.crossbar, where.row : where.row + rows_used,
                           where.col : where.col + cols_used] = plane
            taken.setdefault(where.crossbar, []).append(
                (where.row, where.row + rows_used, where.col, where.col + cols_used))
        if phase:
            self.stored[group] = digits
        entry = CrossbarGroup(weight_bits, rows_used, cols_used, tuple(places), phase)
        self.groups[group] = entry
        return entry

    def group_digits(self, group: int) -> np.ndarray:
        """The digit planes uint8 [S, rows_used, cols_used] group `group` stores: from the
        cell array for a phase-0 group, from `stored` for a later phase's."""
        if group in self.stored:
            return self.stored[group]
        return self.groups[group].digits(self.cells)

    def overlapping(self, group: int) -> tuple[int, ...]:
        """The other groups of this core that share a cell with `group` (all of other
        phases), ascending: programming `group` overwrites them."""
        mine = self.groups[group]
        return tuple(gid for gid, other in sorted(self.groups.items())
                     if gid != group and mine.shares_cells(other))

    def _taken_rectangles(self, phase: int = 0) -> dict[int, list[tuple[int, int, int, int]]]:
        """Cell rectangles taken by the groups of `phase`, by crossbar."""
        if self._taken is None:
            by_phase: dict[int, dict[int, list[tuple[int, int, int, int]]]] = {}
            for g in self.groups.values():
                taken = by_phase.setdefault(g.phase, {})
                for s in g.slices:
                    taken.setdefault(s.crossbar, []).append(
                        (s.row, s.row + g.rows_used, s.col, s.col + g.cols_used))
            self._taken = by_phase
        return self._taken.setdefault(phase, {})

    def _free_place(self, pending: list[Slice], rows_used: int, cols_used: int,
                    phase: int = 0) -> Slice:
        crossbars, _, cols = self.cells.shape
        taken = self._taken_rectangles(phase)
        for xbar in range(crossbars):
            for col in range(cols - cols_used + 1):
                where = Slice(xbar, 0, col)
                if not _overlaps(taken, pending, rows_used, cols_used, where):
                    return where
        raise ValueError(f"no free {rows_used}x{cols_used} cell block left on this core")

    def _check_fits(self, group: int, rows_used: int, cols_used: int, where: Slice) -> None:
        crossbars, rows, cols = self.cells.shape
        if not (0 <= where.crossbar < crossbars and where.row >= 0 and where.col >= 0
                and where.row + rows_used <= rows and where.col + cols_used <= cols):
            raise ValueError(f"group {group}: slice {where} does not fit {crossbars}x{rows}x{cols}")


def _overlaps(taken: dict[int, list[tuple[int, int, int, int]]], pending: list[Slice],
              rows_used: int, cols_used: int, where: Slice) -> bool:
    """Whether a rows_used x cols_used slice at `where` shares a cell with a taken rectangle
    or with a `pending` slice of the same size (an empty slice shares none)."""
    r0, r1, c0, c1 = where.row, where.row + rows_used, where.col, where.col + cols_used
    others = taken.get(where.crossbar, []) + [
        (p.row, p.row + rows_used, p.col, p.col + cols_used)
        for p in pending if p.crossbar == where.crossbar]
    return any(r0 < b1 and b0 < r1 and c0 < d1 and d0 < c1 for b0, b1, d0, d1 in others)


def pack_cells(blocks: Iterable[np.ndarray], cell_bits: int) -> bytes:
    """The uint8 cell values of `blocks` (each < 2^cell_bits, blocks in order, each in C
    order) packed cell_bits bits a value into bytes, least significant bits first, the
    last byte padded with zero bits. Packed PACK_CHUNK values at a time, so that no copy
    of all the values is made."""
    parts, pending, size = [], [], 0
    for block in blocks:
        pending.append(np.asarray(block, dtype=np.uint8).reshape(-1))
        size += pending[-1].size
        if size >= PACK_CHUNK:
            values = np.concatenate(pending)
            whole = size // 8 * 8  # 8 values fill cell_bits whole bytes
            parts.append(_pack(values[:whole], cell_bits))
            pending, size = [values[whole:]], size - whole
    parts.append(_pack(np.concatenate(pending) if pending else np.zeros(0, np.uint8),
                       cell_bits))
    return b"".join(parts)


def _pack(values: np.ndarray, cell_bits: int) -> bytes:
    if 8 % cell_bits == 0:  # whole values a byte: shift and add, no bit arrays
        per = 8 // cell_bits
        padded = np.zeros(-(-values.size // per) * per, dtype=np.uint8)
        padded[: values.size] = values
        lanes = padded.reshape(-1, per)
        packed = np.zeros(lanes.shape[0], dtype=np.uint8)
        for lane in range(per):
            packed |= lanes[:, lane] << np.uint8(lane * cell_bits)
        return packed.tobytes()
    bits = np.unpackbits(values[:, None], axis=1, bitorder="little")[:, :cell_bits]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_cells(data: bytes | memoryview, count: int, cell_bits: int) -> np.ndarray:
    """The first `count` cell values (uint8) of `data` as pack_cells packed them."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if 8 % cell_bits == 0:
        per = 8 // cell_bits
        # Each byte value's `per` cells side by side in one little-endian word: unpacking
        # is one gather (a third faster than shifting lane by lane).
        lanes = np.arange(256, dtype=np.uint8)[:, None] >> (
            np.arange(per, dtype=np.uint8) * np.uint8(cell_bits))
        words = (lanes & np.uint8((1 << cell_bits) - 1)).view(f"<u{per}").reshape(-1)
        return words[raw].view(np.uint8)[:count]
    parts = []
    step = PACK_CHUNK * cell_bits // 8  # bytes of PACK_CHUNK values
    for start in range(0, raw.size, step):
        bits = np.unpackbits(raw[start : start + step], bitorder="little")
        whole = bits.size // cell_bits * cell_bits
        parts.append(np.packbits(bits[:whole].reshape(-1, cell_bits), axis=1,
                                 bitorder="little").reshape(-1))
    return np.concatenate(parts)[:count] if parts else np.zeros(0, dtype=np.uint8)


@dataclass
class Image:
    """The whole chip's crossbar programming image, cores by global number."""

    cell_bits: int
    rows: int
    cols: int
    cores: dict[int, CoreImage] = field(default_factory=dict)

    @property
    def phases(self) -> int:
        """1 + the largest phase of any group (1 without groups); > 1: a phased image,
        whose crossbars start unprogrammed."""
        return 1 + max((g.phase for core in self.cores.values() for g in core.groups.values()),
                       default=0)

    def core(self, number: int, crossbars: int = 1) -> CoreImage:
        """The image of core `number`, created with `crossbars` empty crossbars if absent."""
        if number not in self.cores:
            cells = np.zeros((crossbars, self.rows, self.cols), dtype=np.uint8)
            self.cores[number] = CoreImage(cells)
        return self.cores[number]

    def to_bytes(self) -> bytes:
        """The `.img` file content (see the module docstring).

        ValueError if a cell outside every group holds a value: the format stores the
        cells of groups only.
        """
        phased = self.phases > 1
        header: dict[str, object] = {
            "cell_bits": self.cell_bits,
            "rows": self.rows,
            "cols": self.cols,
            "cores": [
                {
                    "core": number,
                    "crossbars": int(self.cores[number].cells.shape[0]),
                    "groups": [
                        {
                            "id": gid,
                            "weight_bits": g.weight_bits,
                            "rows_used": g.rows_used,
                            "cols_used": g.cols_used,
                            "slices": [[s.crossbar, s.row, s.col] for s in g.slices],
                            **({"phase": g.phase} if phased else {}),
                        }
                        for gid, g in sorted(self.cores[number].groups.items())
                    ],
                }
                for number in sorted(self.cores)
            ],
        }
        if phased:
            header["phases"] = self.phases
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return b"".join([MAGIC, struct.pack("<I", len(text)), text,
                         pack_cells(self._stored_cells(), self.cell_bits)])

    def _stored_cells(self) -> Iterator[np.ndarray]:
        """The cells the file stores, slice by slice in header order; ValueError if a cell
        outside every group holds a value."""
        for number in sorted(self.cores):
            core = self.cores[number]
            stored = 0
            for (group, _), cells in _slice_cells(core):
                if group.phase == 0:
                    stored += int(np.count_nonzero(cells))
                yield cells
            # Phase-0 groups never overlap (add_group and the loader refuse it) and only
            # they are in the cell array, so every value the cells hold is stored when the
            # stored cells of phase-0 groups count all of them.
            if stored != np.count_nonzero(core.cells):
                raise ValueError(f"core {number}: a cell outside every crossbar group holds "
                                 "a value; the image stores the cells of groups only")

    @classmethod
    def from_bytes(cls, content: bytes, name: str = "<image>") -> Image:
        """Parse `.img` content; a CimcError naming `name` if it is corrupt or of an
        older format."""

        def corrupt(why: str) -> CimcError:
            return CimcError(f"{name}: not a valid crossbar image ({why}); regenerate it")

        if content[: len(MAGIC)] in OLD_MAGICS:
            raise CimcError(f"{name}: a crossbar image of an older format "
                            f"({content[:len(MAGIC)].decode()}; this cimc reads "
                            f"{MAGIC.decode()}); recompile the model to regenerate it")
        if content[: len(MAGIC)] != MAGIC or len(content) < len(MAGIC) + 4:
            raise corrupt("bad magic")
        (length,) = struct.unpack_from("<I", content, len(MAGIC))
        start = len(MAGIC) + 4
        try:
            header = json.loads(content[start : start + length].decode())
            image = cls(int(header["cell_bits"]), int(header["rows"]), int(header["cols"]))
            phases = int(header.get("phases", 1))
            if not 1 <= image.cell_bits <= 8:
                raise corrupt(f"cell_bits {image.cell_bits} is not within 1..8")
            for entry in header["cores"]:
                shape = (int(entry["crossbars"]), image.rows, image.cols)
                if min(shape) < 0:
                    raise corrupt(f"core {entry['core']} has a negative size")
                core = CoreImage(np.zeros(shape, dtype=np.uint8))
                for g in entry["groups"]:
                    slices = tuple(Slice(*map(int, s)) for s in g["slices"])
                    group = CrossbarGroup(
                        int(g["weight_bits"]), int(g["rows_used"]), int(g["cols_used"]), slices,
                        int(g.get("phase", 0)),
                    )
                    if group.rows_used < 0 or group.cols_used < 0:
                        raise corrupt(f"group {g['id']} of core {entry['core']} has a "
                                      "negative size")
                    if not 0 <= group.phase < phases:
                        raise corrupt(f"group {g['id']} of core {entry['core']} has phase "
                                      f"{group.phase}, outside 0..{phases - 1}")
                    if len(slices) != slice_count(group.weight_bits, image.cell_bits):
                        raise corrupt(f"group {g['id']} of core {entry['core']} has "
                                      f"{len(slices)} slices")
                    taken = core._taken_rectangles(group.phase)
                    for index, s in enumerate(slices):
                        core._check_fits(int(g["id"]), group.rows_used, group.cols_used, s)
                        if _overlaps(taken, list(slices[:index]), group.rows_used,
                                     group.cols_used, s):
                            raise corrupt(f"group {g['id']} of core {entry['core']} overlaps "
                                          "cells of another slice")
                    for s in slices:
                        taken.setdefault(s.crossbar, []).append(
                            (s.row, s.row + group.rows_used, s.col, s.col + group.cols_used))
                    core.groups[int(g["id"])] = group
                    if group.phase:
                        core.stored[int(g["id"])] = np.zeros(
                            (len(slices), group.rows_used, group.cols_used), dtype=np.uint8)
                image.cores[int(entry["core"])] = core
            if "phases" in header and phases < 2:
                raise corrupt(f'"phases" is {phases}; it is written only for more than one')
            if image.phases != phases:
                raise corrupt(f"it declares {phases} phase(s) but its groups have "
                              f"{image.phases}")
        except CimcError:
            raise
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise corrupt(f"bad header: {exc}") from None
        offset = start + length
        places = [cells for number in sorted(image.cores)
                  for _, cells in _slice_cells(image.cores[number])]
        count = sum(cells.size for cells in places)
        size = -(-count * image.cell_bits // 8)
        if offset + size > len(content):
            raise corrupt("the cell data is truncated")
        if offset + size != len(content):
            raise corrupt(f"{len(content) - offset - size} unexpected trailing bytes")
        values = unpack_cells(memoryview(content)[offset:], count, image.cell_bits)
        if count * image.cell_bits % 8 and content[-1] >> (count * image.cell_bits % 8):
            raise corrupt("the padding bits after the last cell are not zero")
        at = 0
        for cells in places:  # views into the cores' cell arrays
            cells[...] = values[at : at + cells.size].reshape(cells.shape)
            at += cells.size
        return image


def _slice_cells(core: CoreImage) -> list[tuple[tuple[CrossbarGroup, Slice], np.ndarray]]:
    """Every slice of `core`'s groups (groups ascending by id, slices in order) with the
    view of its cells: in the cell array for phase 0, in `stored` for later phases."""
    return [((g, s), core.stored[gid][index] if g.phase else
             core.cells[s.crossbar, s.row : s.row + g.rows_used, s.col : s.col + g.cols_used])
            for gid, g in sorted(core.groups.items()) for index, s in enumerate(g.slices)]


def save_image(image: Image, path: str | Path) -> None:
    """Write `image` to `path` atomically in the `.img` format."""
    write_atomic(path, image.to_bytes())


def load_image(path: str | Path) -> Image:
    """Read an `.img` file; CimcError naming the file if it is missing or corrupt."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise CimcError(f"{path}: cannot read crossbar image: {exc.strerror}") from None
    return Image.from_bytes(content, str(path))
