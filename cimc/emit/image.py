"""The crossbar programming image (prog.img) of a placed module.

The image holds every crossbar block as a bit-sliced group of the core it was
placed on, its slices on the crossbars where `place` put them, in the phase of its
matvec (a model run in phases: groups of different phases may share cells); blocks of
equal weights that `place` gave one group on a core are programmed once.
"""

from __future__ import annotations

import numpy as np

from cimc.dialect.chip import block_shape, blocks_of
from cimc.dialect.phased import phase_of
from cimc.ir.module import Module
from cimc.isa.image import Image, Slice
from cimc.targets import Target


def build_image(module: Module, target: Target) -> Image:
    """Every placed crossbar block as a bit-sliced group of its core."""
    image = Image(target.cell_bits, target.rows, target.cols)
    groups: list[tuple[int, int, np.ndarray, list[Slice], int]] = []
    for op in module.ops():
        if op.kind != "matvec":
            continue
        weights = module.constants[op.inputs[1]]
        s = op.attrs["slices"]
        flat = op.attrs["block_slices"]
        blocks = blocks_of(op)
        for k in range(len(op.attrs["block_cores"])):  # every replica's blocks
            rows, cols = block_shape(module, op, *blocks[k % len(blocks)])
            places = [Slice(flat[2 * (k * s + d)], 0, flat[2 * (k * s + d) + 1]) for d in range(s)]
            groups.append((op.attrs["block_cores"][k], op.attrs["block_groups"][k],
                           weights[rows, cols], places, phase_of(op)))
    crossbars: dict[int, int] = {}
    for core, _, _, places, _ in groups:
        crossbars[core] = max([crossbars.get(core, 0)] + [p.crossbar + 1 for p in places])
    programmed: set[tuple[int, int, int]] = set()
    for core, group, block, places, phase in groups:
        if (core, group, phase) in programmed:
            continue  # blocks of equal weights sharing one group (problem.Problem.owners)
        programmed.add((core, group, phase))
        image.core(core, crossbars[core]).add_group(group, block, target.weight_bits,
                                                    target.cell_bits, places, phase)
    return image
