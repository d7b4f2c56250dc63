"""The crossbar programming image: what every crossbar cell holds.

For each core the image gives the cell contents of its crossbars (uint8
`[crossbars, rows, cols]`, values in [0, 2^cell_bits)) and its crossbar
groups: group id -> a signed `weight_bits`-bit matrix block W[rows_used,
cols_used], stored bit-sliced over S = ceil(weight_bits / cell_bits) column
ranges (slices). Storage is offset-binary: u = w + 2^(weight_bits-1) split into
cell_bits-bit digits, slice s holding digit s (s = 0 least significant).
A core's cell array may hold fewer crossbars than the target has (the rest are
unprogrammed, all zero).

File format (`.img`), all integers little-endian, byte-identical for equal
content:

    magic     8 bytes  b"CIMCIMG1"
    length    uint32   byte length of the header that follows
    header    UTF-8 JSON, keys sorted, no spaces:
              {"cell_bits": b, "rows": R, "cols": C,
               "cores": [{"core": n, "crossbars": k,
                          "groups": [{"id": g, "weight_bits": w, "rows_used": r,
                                      "cols_used": c,
                                      "slices": [[crossbar, row, col], ...]}, ...]},
                         ...]}
              cores ascending by number, groups ascending by id
    cells     for each core in header order: k*R*C bytes, the uint8 cell
              array [crossbars, rows, cols] in C order
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cimc.diagnostics import CimcError
from cimc.outputs import write_atomic

MAGIC = b"CIMCIMG1"


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
    """The crossbars of one core: cell array [crossbars, rows, cols] and groups by id."""

    cells: np.ndarray
    groups: dict[int, CrossbarGroup] = field(default_factory=dict)
    # Cells taken by groups, for first-fit placement; rebuilt when absent.
    _occupied: np.ndarray | None = field(default=None, repr=False, compare=False)

    def add_group(
        self,
        group: int,
        weights: np.ndarray,
        weight_bits: int,
        cell_bits: int,
        slices: list[Slice] | None = None,
    ) -> CrossbarGroup:
        """Program W as group `group`; slices=None places each slice first-fit on free cells.

        ValueError (nothing changed) if a slice does not fit or overlaps another group.
        """
        if group in self.groups:
            raise ValueError(f"crossbar group {group} is already defined")
        digits = program_group(weights, weight_bits, cell_bits)
        rows_used, cols_used = digits.shape[1:]
        if slices is not None and len(slices) != digits.shape[0]:
            raise ValueError(f"group {group} needs {digits.shape[0]} slices, got {len(slices)}")
        used = self._used().copy()
        places = []
        for index in range(digits.shape[0]):
            where = slices[index] if slices is not None else self._free_place(used, rows_used,
                                                                             cols_used)
            self._check_fits(group, rows_used, cols_used, where)
            block = used[where.crossbar, where.row : where.row + rows_used,
                         where.col : where.col + cols_used]
            if block.any():
                raise ValueError(f"group {group}: slice {where} overlaps cells already in use")
            block[...] = True
            places.append(where)
        for plane, where in zip(digits, places, strict=True):
            self.cells[where.crossbar, where.row : where.row + rows_used,
                       where.col : where.col + cols_used] = plane
        self._occupied = used
        entry = CrossbarGroup(weight_bits, rows_used, cols_used, tuple(places))
        self.groups[group] = entry
        return entry

    def _used(self) -> np.ndarray:
        if self._occupied is None or self._occupied.shape != self.cells.shape:
            used = np.zeros(self.cells.shape, dtype=bool)
            for g in self.groups.values():
                for s in g.slices:
                    used[s.crossbar, s.row : s.row + g.rows_used, s.col : s.col + g.cols_used] = 1
            self._occupied = used
        return self._occupied

    def _free_place(self, used: np.ndarray, rows_used: int, cols_used: int) -> Slice:
        crossbars, _, cols = used.shape
        for xbar in range(crossbars):
            for col in range(cols - cols_used + 1):
                if not used[xbar, :rows_used, col : col + cols_used].any():
                    return Slice(xbar, 0, col)
        raise ValueError(f"no free {rows_used}x{cols_used} cell block left on this core")

    def _check_fits(self, group: int, rows_used: int, cols_used: int, where: Slice) -> None:
        crossbars, rows, cols = self.cells.shape
        if not (0 <= where.crossbar < crossbars and where.row >= 0 and where.col >= 0
                and where.row + rows_used <= rows and where.col + cols_used <= cols):
            raise ValueError(f"group {group}: slice {where} does not fit {crossbars}x{rows}x{cols}")


@dataclass
class Image:
    """The whole chip's crossbar programming image, cores by global number."""

    cell_bits: int
    rows: int
    cols: int
    cores: dict[int, CoreImage] = field(default_factory=dict)

    def core(self, number: int, crossbars: int = 1) -> CoreImage:
        """The image of core `number`, created with `crossbars` empty crossbars if absent."""
        if number not in self.cores:
            cells = np.zeros((crossbars, self.rows, self.cols), dtype=np.uint8)
            self.cores[number] = CoreImage(cells)
        return self.cores[number]

    def to_bytes(self) -> bytes:
        """The `.img` file content (see the module docstring)."""
        header = {
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
                        }
                        for gid, g in sorted(self.cores[number].groups.items())
                    ],
                }
                for number in sorted(self.cores)
            ],
        }
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        parts = [MAGIC, struct.pack("<I", len(text)), text]
        for number in sorted(self.cores):
            cells = self.cores[number].cells
            parts.append(np.ascontiguousarray(cells, dtype=np.uint8).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, content: bytes, name: str = "<image>") -> Image:
        """Parse `.img` content; a CimcError naming `name` if it is corrupt."""

        def corrupt(why: str) -> CimcError:
            return CimcError(f"{name}: not a valid crossbar image ({why}); regenerate it")

        if content[: len(MAGIC)] != MAGIC or len(content) < len(MAGIC) + 4:
            raise corrupt("bad magic")
        (length,) = struct.unpack_from("<I", content, len(MAGIC))
        start = len(MAGIC) + 4
        try:
            header = json.loads(content[start : start + length].decode())
            image = cls(int(header["cell_bits"]), int(header["rows"]), int(header["cols"]))
            offset = start + length
            for entry in header["cores"]:
                shape = (int(entry["crossbars"]), image.rows, image.cols)
                size = shape[0] * shape[1] * shape[2]
                if offset + size > len(content):
                    raise corrupt(f"cell data of core {entry['core']} is truncated")
                cells = np.frombuffer(content, np.uint8, size, offset).reshape(shape).copy()
                offset += size
                core = CoreImage(cells)
                for g in entry["groups"]:
                    slices = tuple(Slice(*map(int, s)) for s in g["slices"])
                    group = CrossbarGroup(
                        int(g["weight_bits"]), int(g["rows_used"]), int(g["cols_used"]), slices
                    )
                    for s in slices:
                        core._check_fits(int(g["id"]), group.rows_used, group.cols_used, s)
                    if len(slices) != slice_count(group.weight_bits, image.cell_bits):
                        raise corrupt(f"group {g['id']} of core {entry['core']} has "
                                      f"{len(slices)} slices")
                    core.groups[int(g["id"])] = group
                image.cores[int(entry["core"])] = core
        except CimcError:
            raise
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise corrupt(f"bad header: {exc}") from None
        if offset != len(content):
            raise corrupt(f"{len(content) - offset} unexpected trailing bytes")
        if any(int(c.cells.max(initial=0)) >> image.cell_bits for c in image.cores.values()):
            raise corrupt(f"a cell value does not fit {image.cell_bits} bits")
        return image


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
