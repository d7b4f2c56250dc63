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
`input_steps`. The block arithmetic, which the frontend's capacity check shares, is
cimc/dialect/chip.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.chip import block_size, kept_blocks
from cimc.ir.module import Module
from cimc.pass_base import BackendPass


@dataclass
class Tile(BackendPass):
    name: ClassVar[str] = "tile"
    requires: ClassVar[tuple[str, ...]] = ("lower",)

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        for op in module.ops():
            if op.kind == "matvec" and "blocks" not in op.attrs:
                return f"matvec {op.name!r} has no crossbar blocks"
        return None

    def apply(self, module: Module) -> None:
        target = self.target
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
            rows, cols = block_size(k, n, target)
            blocks = kept_blocks(k, n, target, nonzero_in(weights))
            op.attrs.update(block_rows=rows, block_cols=cols, blocks=blocks,
                            slices=target.slices, input_steps=target.input_steps)


def nonzero_in(weights: np.ndarray) -> Callable[[slice, slice], bool]:
    """Whether a block of `weights` holds a nonzero weight."""
    return lambda rows, cols: bool(np.any(weights[rows, cols]))
