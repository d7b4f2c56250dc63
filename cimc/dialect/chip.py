"""The chip's op kinds and the attributes passes give them: what `lower` makes, how
`tile` cuts a `matvec` into crossbar blocks, and the chunk the code generator's
element-wise loops work in.

`lower` (passes/lower/) rewrites every integer op into one of CHIP_KINDS;
`tile` (passes/tile.py) adds to each `matvec` `block_rows`, `block_cols` and
`blocks` (flat `[i0, j0, i1, j1, ...]` row/column block coordinates), whose
arithmetic is here so the frontend's capacity check counts crossbars exactly as
`tile` will cut them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op, TensorType
from cimc.targets import Target

# Kinds the backend runs on the chip (the host's: cimc/dialect/host.py).
CHIP_KINDS = ("matvec", "pool", "eltwise", "rescale", "scale", "product", "dot",
              "pixel_softmax", "pixel_layernorm", "join", "gather", "view")

# Chip kinds that may end with a lookup table: a `lut` operand after their others (a
# constant of 256 codes in byte order) that `vlut` applies to the result codes.
LUT_KINDS = ("matvec", "pool", "eltwise", "rescale", "scale", "product")
LUT_OPERAND = {"matvec": 4, "pool": 1, "eltwise": 2, "rescale": 1, "scale": 2, "product": 2}


def runtime_operands(module: Module, op: Op) -> list[str]:
    """The operands of a chip op that other ops compute (weights, bias, requantization
    and lookup tables are constants)."""
    return [v for v in op.inputs if not module.is_constant(v)]


def lut_table(module: Module, op: Op) -> str | None:
    """The lookup table operand of a chip op, if it has one."""
    k = LUT_OPERAND.get(op.kind)
    if k is not None and op.kind == "scale" and op.attrs.get("offsets"):
        k += 1  # after the per-channel offsets
    return op.inputs[k] if k is not None and len(op.inputs) > k else None


def rescale_clamps(module: Module, op: Op) -> bool:
    """Whether a clamp-only `rescale` (M = 0) narrows the range of its operand's type."""
    info = np.iinfo(module.values[op.inputs[0]].numpy_dtype)
    return op.attrs["lo"] > info.min or op.attrs["hi"] < info.max


# Elements per chunk of the element-wise loops (their requant tables hold one
# entry per element of a chunk).
CHUNK = 128


def pixel_runs(values: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, value) of the runs of equal values: the pixel loops of an average
    pool whose windows count different positions (one per run of equal column counts)."""
    runs: list[tuple[int, int, int]] = []
    for k, v in enumerate(values):
        if runs and runs[-1][2] == v:
            runs[-1] = (runs[-1][0], k + 1, v)
        else:
            runs.append((k, k + 1, v))
    return runs


def image_dims(ty: TensorType) -> tuple[int, int, int]:
    """(H, W, C) of an activation stored NHWC: [1,C,H,W]; [1,K] (a 1x1 image); the tokens
    of a sequence, [1,T,D] or [T,D] (one row of T pixels of D channels: its row-major
    bytes are the image's, passes/lower/sequence.py); a recurrent layer's states of both
    directions [dirs,N,H] likewise, as dirs·N tokens."""
    if len(ty.shape) == 4 and ty.shape[0] == 1:
        return ty.shape[2], ty.shape[3], ty.shape[1]
    if len(ty.shape) == 3:
        return 1, ty.shape[0] * ty.shape[1], ty.shape[2]
    if len(ty.shape) == 2:
        return 1, ty.shape[0], ty.shape[1]
    raise ValueError(f"shape {list(ty.shape)} is not [1,C,H,W], [A,T,D] or [T,D]")


def blocks_of(op: Op) -> list[tuple[int, int]]:
    """The (row block, column block) pairs of a tiled matvec."""
    flat = op.attrs["blocks"]
    return [(flat[k], flat[k + 1]) for k in range(0, len(flat), 2)]


def block_shape(module: Module, op: Op, i: int, j: int) -> tuple[slice, slice]:
    """Row and column ranges of block (i, j) in the weight matrix."""
    k, n = module.values[op.inputs[1]].shape
    r, c = op.attrs["block_rows"], op.attrs["block_cols"]
    return slice(i * r, min(k, (i + 1) * r)), slice(j * c, min(n, (j + 1) * c))


def weight_key(module: Module, op: Op, i: int, j: int, replica: int = 0) -> Hashable:
    """What block (i, j) of `replica` of matvec `op` holds in its crossbar cells: a
    digest of its weights, its slices and the replica. Blocks of equal keys on one
    core are programmed once and read by each (an unrolled recurrent layer's copies of
    R); replicas exist to run at once, so they never share cells."""
    rows, cols = block_shape(module, op, i, j)
    weights = np.ascontiguousarray(module.constants[op.inputs[1]][rows, cols])
    digest = hashlib.blake2b(weights.tobytes() + repr(weights.shape).encode(),
                             digest_size=16).digest()
    return (digest, int(op.attrs.get("slices", 1)), replica)


def block_size(k: int, n: int, target: Target) -> tuple[int, int]:
    """Weight rows and columns of one block of a k x n matrix: a crossbar's rows and up
    to its columns, narrower only where one column of blocks (all its row blocks) would
    not fit the chip's crossbars at once, so that a layer larger than the chip can run
    over several phases a column block at a time (passes/partition.py)."""
    cols = min(n, target.cols)
    row_blocks = -(-k // target.rows)
    capacity = target.total_crossbars * target.cols
    while cols > 1 and row_blocks * rounded_width(cols, target.cols) * target.slices > capacity:
        cols = max(1, rounded_width(cols, target.cols) // 2)
    return target.rows, cols


def kept_blocks(k: int, n: int, target: Target,
                nonzero: Callable[[slice, slice], bool]) -> list[int]:
    """Flat `[i, j, ...]` blocks of a k x n weight matrix: those whose row and column
    ranges `nonzero` says hold a weight, and at least the first of every column."""
    rows, cols = block_size(k, n, target)
    blocks: list[int] = []
    for j in range(-(-n // cols)):
        column = slice(j * cols, min(n, (j + 1) * cols))
        kept = [i for i in range(-(-k // rows))
                if nonzero(slice(i * rows, min(k, (i + 1) * rows)), column)]
        for i in kept or [0]:
            blocks += [i, j]
    return blocks


def block_columns(k: int, n: int, blocks: list[int], target: Target) -> int:
    """Cell columns the blocks of a k x n matrix take: each block's weight columns times
    the slices."""
    _, cols = block_size(k, n, target)
    return sum((min(n, (j + 1) * cols) - j * cols) * target.slices
               for j in blocks[1::2])


def check_columns(columns: int, target: Target, subject: str = "the model") -> None:
    """CimcError when `columns` cell columns need more crossbars than the target has."""
    needed = -(-columns // target.cols)
    if needed > target.total_crossbars:
        cores = -(-needed // target.crossbars_per_core)
        raise CimcError(f"{subject} needs at least {needed} crossbars on {cores} cores but "
                        f"target {target.name!r} has {target.total_crossbars} crossbars on "
                        f"{target.cores} cores; choose a bigger target, or one whose "
                        "crossbars can be reprogrammed (the model then runs in phases)")


def channel_too_big(subject: str, blocks: int, needed: int, target: Target) -> CimcError:
    """The error of a layer (`subject`) one output channel of whose weights, `blocks` row
    blocks, needs `needed` crossbars, more than the chip has: phases split a layer by
    output channels only (passes/partition.py)."""
    return CimcError(
        f"{subject}: one output channel's weights ({blocks} blocks of {target.rows} rows) "
        f"need {needed} crossbars of {target.rows}x{target.cols} but target "
        f"{target.name!r} has {target.total_crossbars}; a layer is split over phases by "
        "output channels, not by input rows, so choose a target with at least "
        f"{needed} crossbars (or taller crossbars, or more bits per cell)")


def rounded_width(width: int, cols: int) -> int:
    """The smallest cols / 2^k that holds `width` columns."""
    size = cols
    while size % 2 == 0 and size // 2 >= width:
        size //= 2
    return size
