"""tile: cut every matvec weight matrix into crossbar blocks.

A block is at most `rows` weight rows by `cols` weight columns (one weight
column takes `slices = ceil(weight_bits / cell_bits)` cell columns, one per
slice, each slice in a crossbar of the same core). Row blocks of one column
block produce partial sums that are added before requantization; inputs wider
than the DAC stream bit-serially over `input_steps` steps. All-zero blocks (off
the diagonal of grouped and depthwise convolutions) are skipped, except that
every column block keeps at least its first block so its outputs exist.

Attributes added to each `matvec`: `block_rows`, `block_cols`, `blocks` (flat
`[i0, j0, i1, j1, ...]` row/column block coordinates), `slices`,
`input_steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op
from cimc.pass_base import Pass
from cimc.targets import Target, load_target


def blocks_of(op: Op) -> list[tuple[int, int]]:
    """The (row block, column block) pairs of a tiled matvec."""
    flat = op.attrs["blocks"]
    return [(flat[k], flat[k + 1]) for k in range(0, len(flat), 2)]


def block_shape(module: Module, op: Op, i: int, j: int) -> tuple[slice, slice]:
    """Row and column ranges of block (i, j) in the weight matrix."""
    k, n = module.values[op.inputs[1]].shape
    r, c = op.attrs["block_rows"], op.attrs["block_cols"]
    return slice(i * r, min(k, (i + 1) * r)), slice(j * c, min(n, (j + 1) * c))


@dataclass
class Tile(Pass):
    name: ClassVar[str] = "tile"
    requires: ClassVar[tuple[str, ...]] = ("lower",)
    target: str = "isaac"

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        for op in module.ops():
            if op.kind == "matvec" and "blocks" not in op.attrs:
                return f"matvec {op.name!r} has no crossbar blocks"
        return None

    def apply(self, module: Module) -> None:
        target = load_target(self.target)
        for op in module.ops():
            if op.kind != "matvec":
                continue
            weights = module.constants[op.inputs[1]]
            k, n = weights.shape
            half = 1 << (target.weight_bits - 1)
            if weights.size and (weights.min() < -half or weights.max() >= half):
                raise CimcError(f"op {op.name!r}: weights need 8 bits but target "
                                f"{target.name!r} stores {target.weight_bits}-bit weights; "
                                "quantize the weights to that width")
            rows, cols = block_size(n, target)
            blocks = kept_blocks(k, n, target, nonzero_in(weights))
            op.attrs.update(block_rows=rows, block_cols=cols, blocks=blocks,
                            slices=target.slices, input_steps=target.input_steps)


def nonzero_in(weights: np.ndarray) -> Callable[[slice, slice], bool]:
    """Whether a block of `weights` holds a nonzero weight."""
    return lambda rows, cols: bool(np.any(weights[rows, cols]))


def block_size(n: int, target: Target) -> tuple[int, int]:
    """Weight rows and columns of one block of a matrix with `n` columns."""
    return target.rows, min(n, target.cols)


def kept_blocks(k: int, n: int, target: Target,
                nonzero: Callable[[slice, slice], bool]) -> list[int]:
    """Flat `[i, j, ...]` blocks of a k x n weight matrix: those whose row and column
    ranges `nonzero` says hold a weight, and at least the first of every column."""
    rows, cols = block_size(n, target)
    blocks: list[int] = []
    for j in range(-(-n // cols)):
        column = slice(j * cols, min(n, (j + 1) * cols))
        kept = [i for i in range(-(-k // rows))
                if nonzero(slice(i * rows, min(k, (i + 1) * rows)), column)]
        for i in kept or [0]:
            blocks += [i, j]
    return blocks


def block_columns(n: int, blocks: list[int], target: Target) -> int:
    """Cell columns the blocks take: each block's weight columns times the slices."""
    _, cols = block_size(n, target)
    return sum((min(n, (j + 1) * cols) - j * cols) * target.slices
               for j in blocks[1::2])
