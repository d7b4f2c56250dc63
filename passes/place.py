"""place: assign crossbar blocks to cores and crossbars, vector work to cores.

The simple placer fills cores in layer order: each block of a matvec goes to
the current core if its `slices` column ranges fit there (first fit over the
core's crossbars), otherwise to the next core. A model that needs more
crossbars than the target has is an error giving both numbers.

Attributes added:
* matvec: `block_cores`, `block_groups` (crossbar group id on that core),
  `block_slices` (flat `[crossbar, col] * slices` per block), `reducers`
  (per column block, the core that adds the partial sums and requantizes:
  the one holding most of that column's blocks);
* pool, eltwise, rescale, concat: `core` (the least loaded core so far).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cimc.backend_codegen import CHUNK
from cimc.diagnostics import CimcError
from cimc.ir import Module
from cimc.pass_base import Pass
from passes.lower import image_dims
from passes.tile import block_shape, blocks_of
from targets import Target, load_target

VECTOR_KINDS = ("pool", "eltwise", "rescale", "concat")
# Local memory per output channel a reducer keeps: i32 bias + (M, shift, zy, lo, hi).
TABLE_BYTES = 24


@dataclass
class CoreState:
    """Free cell columns of each crossbar of one core, and its next group id."""

    cols: int
    free: list[int]
    groups: int = 0
    table_bytes: int = 0  # bias and requant tables the core may hold in local memory

    def fit(self, width: int, slices: int) -> list[tuple[int, int]] | None:
        """First-fit places for `slices` column ranges of `width`; None if they do not fit."""
        free = list(self.free)
        places = []
        for _ in range(slices):
            xbar = next((x for x, f in enumerate(free) if f >= width), None)
            if xbar is None:
                return None
            places.append((xbar, self.cols - free[xbar]))
            free[xbar] -= width
        self.free = free
        return places


@dataclass
class Place(Pass):
    name: ClassVar[str] = "place"
    target: str = "isaac"

    def apply(self, module: Module) -> None:
        target = load_target(self.target)
        cores: list[CoreState] = []
        current = 0
        budget = target.local_memory_bytes // 2
        for op in module.ops():
            if op.kind != "matvec":
                continue
            block_cores, groups, slices = [], [], []
            columns: set[tuple[int, int]] = set()
            for i, j in blocks_of(op):
                width = block_shape(module, op, i, j)[1]
                cols = width.stop - width.start
                while True:
                    while current >= len(cores):
                        cores.append(CoreState(target.cols,
                                               [target.cols] * target.crossbars_per_core))
                    # A core holding part of a column may reduce it: room for its tables.
                    tables = 0 if (current, j) in columns else TABLE_BYTES * cols
                    places = None
                    if cores[current].table_bytes + tables <= budget:
                        places = cores[current].fit(cols, op.attrs["slices"])
                    if places is not None:
                        cores[current].table_bytes += tables
                        columns.add((current, j))
                        break
                    if cores[current].groups == 0:
                        raise CimcError(f"op {op.name!r}: a block of {cols} weight columns "
                                        f"does not fit one core of target {target.name!r}")
                    current += 1
                block_cores.append(current)
                groups.append(cores[current].groups)
                cores[current].groups += 1
                slices += [v for place in places for v in place]
            op.attrs.update(block_cores=block_cores, block_groups=groups, block_slices=slices,
                            reducers=_reducers(op.attrs["blocks"], block_cores))
        _check_capacity(target, cores)
        _place_vector_ops(module, cores, target)


def _reducers(flat_blocks: list[int], block_cores: list[int]) -> list[int]:
    columns = max(flat_blocks[1::2]) + 1
    reducers = []
    for j in range(columns):
        owners = [c for (bj, c) in zip(flat_blocks[1::2], block_cores, strict=True) if bj == j]
        reducers.append(min(set(owners), key=lambda c: (-owners.count(c), c)))
    return reducers


def crossbars_used(target: Target, cores: list[CoreState]) -> int:
    return sum(sum(1 for f in core.free if f < target.cols) for core in cores)


def _check_capacity(target: Target, cores: list[CoreState]) -> None:
    if len(cores) > target.cores:
        needed = crossbars_used(target, cores)
        available = target.cores * target.crossbars_per_core
        raise CimcError(f"the model needs {needed} crossbars on {len(cores)} cores but target "
                        f"{target.name!r} has {available} crossbars on {target.cores} cores; "
                        "choose a bigger target (weights are not time-multiplexed)")


def _place_vector_ops(module: Module, cores: list[CoreState], target: Target) -> None:
    """Each vector op on the core with the least vector work (elements) so far that has
    room for its requant table."""
    tables = [c.table_bytes for c in cores] or [0]
    load = [0] * len(tables)
    for op in module.ops():
        if op.kind not in VECTOR_KINDS:
            continue
        h, w, c = image_dims(module.values[op.outputs[0]])
        need = TABLE_BYTES * (c if op.kind == "pool" else min(h * w * c, CHUNK))
        fits = [k for k in range(len(load)) if tables[k] + need <= target.local_memory_bytes // 2]
        if not fits and len(load) < target.cores:
            load.append(0)
            tables.append(0)
            fits = [len(load) - 1]
        if not fits:
            raise CimcError(f"op {op.name!r}: no core has room for its {need}-byte requant "
                            f"table on target {target.name!r}")
        core = min(fits, key=lambda k: (load[k], k))
        load[core] += h * w * c
        tables[core] += need
        op.attrs["core"] = core
