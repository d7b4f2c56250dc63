"""The in-memory program: what the assembler builds, the encoder writes and
the simulator runs.

A Program is the whole chip's program: one CoreStream of instructions per
core that has code, the local-memory initialisers (`.data`) of each core, the
declarations of the quantized inputs/outputs in global memory, the target
name and the crossbar programming image.

Instructions are plain data: the mnemonic as written in the table (type
suffix included, e.g. "vadd.i8", "mvm.acc.u8") and one int per encoding
field of that instruction, in the table's operand order (cimc.isa.table.SPECS).
A memory operand `offset(rN)` contributes two values, base register then
offset; a branch target is the index of the target instruction in the same
core's stream (labels are resolved by the assembler and not kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cimc.diagnostics import Location

# Element types of inputs/outputs and of instruction type suffixes; same names
# as the tensor IR (cimc.ir.module.DTYPES).
IO_DTYPES: tuple[str, ...] = ("i8", "u8", "i32")


@dataclass
class Instruction:
    """One instruction: mnemonic and its field values (ints), in operand order.

    `loc` is where it was written, for messages; it is not part of equality.
    """

    mnemonic: str
    operands: tuple[int, ...]
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass
class CoreStream:
    """The instruction stream of one core (global core number `core`)."""

    core: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class DataSegment:
    """Bytes written to a core's local memory at `addr` before the program runs."""

    addr: int
    data: bytes


@dataclass
class IODecl:
    """A quantized tensor the host writes (input) or reads (output) in global memory.

    Layout is NHWC for 4-D tensors, row-major otherwise; `shape` excludes the
    batch dimension. real = scale * (q - zp).
    """

    name: str
    addr: int
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zp: int
    loc: Location | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Number of elements (excluding batch)."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        """Bytes of one batch element in global memory."""
        return self.size * (4 if self.dtype == "i32" else 1)


@dataclass
class Program:
    """A whole-chip program.

    `streams` and `data` are keyed by global core number and hold cores in
    ascending order; every core with data also has a stream (possibly empty),
    as the assembler and the decoder build it. `image` is the crossbar
    programming image path as written in `.image` (relative to the program
    file), or None.
    """

    target: str | None = None
    image: str | None = None
    inputs: list[IODecl] = field(default_factory=list)
    outputs: list[IODecl] = field(default_factory=list)
    streams: dict[int, CoreStream] = field(default_factory=dict)
    data: dict[int, list[DataSegment]] = field(default_factory=dict)
    # Bytes written to global memory before the program runs (`.global_data`): the
    # constant tables a model run in phases loads phase by phase.
    global_data: list[DataSegment] = field(default_factory=list)

    def cores(self) -> list[int]:
        """Cores with code or data, ascending."""
        return sorted(set(self.streams) | set(self.data))
