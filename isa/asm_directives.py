"""The assembler's directives: one function per directive, checking its arguments.

`.target`, `.image`, `.input`/`.output` describe the program; `.core` opens a
core's section; `.data` with `.word`/`.byte` lays out its initial memory. Each
reads and changes the assembler's state through `Assembly` (the Assembler of
isa/assembler.py, which dispatches to DIRECTIVES).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Protocol

from cimc.diagnostics import CimcError, Location
from cimc.isa.asm_parse import Arg, Statement
from cimc.isa.program import IO_DTYPES, CoreStream, DataSegment, IODecl, Program


class Assembly(Protocol):
    """What a directive reads and changes of the assembler: the program so far, the open
    core section and `.data` block, the line of each core's section, and errors at
    file:line:col."""

    filename: str
    program: Program
    stream: CoreStream | None
    segment: DataSegment | None
    core_lines: dict[int, int]

    def error(self, message: str, line: int, column: int) -> CimcError: ...

    def close_core(self) -> None: ...


DTYPE_RANGE = {"i8": (-128, 127), "u8": (0, 255), "i32": (-(1 << 31), (1 << 31) - 1)}
MAX_CORE = (1 << 16) - 1


def expect(asm: Assembly, st: Statement, usage: str, *kinds: str) -> list[Arg]:
    """The directive's args, checked against `kinds` (alternatives joined by |)."""
    if len(st.args) != len(kinds):
        raise asm.error(f"{st.name} takes {len(kinds)} argument(s): {st.name} {usage}",
                        st.line, st.column)
    for arg, kind in zip(st.args, kinds, strict=True):
        if arg.kind not in kind.split("|"):
            raise asm.error(f"bad argument for {st.name}: expected {st.name} {usage}",
                            arg.line, arg.column)
    return st.args


def text_of(asm: Assembly, arg: Arg) -> str:
    """A name or file argument, bare or as a JSON-quoted string."""
    if arg.kind == "symbol":
        return str(arg.value)
    try:
        return str(json.loads(str(arg.value)))
    except ValueError:
        raise asm.error("bad escape in string", arg.line, arg.column) from None


def target(asm: Assembly, st: Statement) -> None:
    """`.target NAME`: the target the program was built for."""
    (name,) = expect(asm, st, "NAME", "symbol|string")
    if asm.program.target is not None:
        raise asm.error(".target given twice", st.line, st.column)
    asm.program.target = text_of(asm, name)


def image(asm: Assembly, st: Statement) -> None:
    """`.image "FILE"`: the crossbar programming image the program loads."""
    (path,) = expect(asm, st, '"FILE"', "symbol|string")
    if asm.program.image is not None:
        raise asm.error(".image given twice", st.line, st.column)
    asm.program.image = text_of(asm, path)


def core(asm: Assembly, st: Statement) -> None:
    """`.core N`: the instructions that follow run on core N."""
    (number,) = expect(asm, st, "N", "integer")
    index = number.value
    if not 0 <= index <= MAX_CORE:
        raise asm.error(f"core number {index} out of range 0..{MAX_CORE}",
                        number.line, number.column)
    if index in asm.program.streams:
        raise asm.error(f"core {index} already has a section (line {asm.core_lines[index]})",
                        number.line, number.column)
    asm.close_core()
    asm.stream = asm.program.streams[index] = CoreStream(index)
    asm.core_lines[index] = st.line
    asm.segment = None


def io(asm: Assembly, st: Statement) -> None:
    """`.input`/`.output NAME, ADDR, DTYPE, [SHAPE], SCALE, ZP`: a tensor the host moves."""
    usage = "NAME, ADDR, DTYPE, [SHAPE], SCALE, ZP"
    name, addr, dtype, shape, scale, zp = expect(
        asm, st, usage, "symbol|string", "integer", "symbol", "shape", "float|integer", "integer")
    if dtype.value not in IO_DTYPES:
        raise asm.error(f"unknown dtype '{dtype.value}'; expected one of "
                        f"{', '.join(IO_DTYPES)}", dtype.line, dtype.column)
    low, high = DTYPE_RANGE[dtype.value]
    checks = [
        (addr, addr.value >= 0, "address must be >= 0"),
        (shape, all(d > 0 for d in shape.value), "shape dimensions must be > 0"),
        (scale, 0 < scale.value < math.inf, "scale must be a positive number"),
        (zp, low <= zp.value <= high,
         f"zero point out of range {low}..{high} for {dtype.value}"),
    ]
    for arg, ok, message in checks:
        if not ok:
            raise asm.error(message, arg.line, arg.column)
    decls = asm.program.inputs if st.name == ".input" else asm.program.outputs
    label = text_of(asm, name)
    # One name may be an input and an output (a model input passed through), as in ONNX.
    if any(d.name == label for d in decls):
        raise asm.error(f"'{label}' is already declared by {st.name}", name.line, name.column)
    decls.append(IODecl(label, addr.value, dtype.value, shape.value, float(scale.value),
                        zp.value, Location(asm.filename, st.line, st.column)))


def data(asm: Assembly, st: Statement) -> None:
    """`.data ADDR`: the `.word`/`.byte` values that follow start at ADDR in local memory."""
    (addr,) = expect(asm, st, "ADDR", "integer")
    if asm.stream is None:
        raise asm.error(".data before any .core directive", st.line, st.column)
    if int(addr.value) < 0:
        raise asm.error("address must be >= 0", addr.line, addr.column)
    asm.segment = DataSegment(int(addr.value), b"")
    asm.program.data.setdefault(asm.stream.core, []).append(asm.segment)


def global_data(asm: Assembly, st: Statement) -> None:
    """`.global_data ADDR`: the `.word`/`.byte` values that follow start at ADDR in global
    memory, written before the program runs (anywhere in the file)."""
    (addr,) = expect(asm, st, "ADDR", "integer")
    if int(addr.value) < 0:
        raise asm.error("address must be >= 0", addr.line, addr.column)
    asm.segment = DataSegment(int(addr.value), b"")
    asm.program.global_data.append(asm.segment)


def values(asm: Assembly, st: Statement) -> None:
    """`.word`/`.byte V, ...`: little-endian values appended to the current .data block."""
    if asm.segment is None:
        raise asm.error(f"{st.name} outside a .data or .global_data block", st.line,
                        st.column)
    size, low, high = (4, -(1 << 31), (1 << 32) - 1) if st.name == ".word" else (1, -128, 255)
    if not st.args:
        raise asm.error(f"{st.name} needs at least one value", st.line, st.column)
    out = bytearray()
    for arg in st.args:
        if arg.kind != "integer":
            raise asm.error(f"{st.name} takes integers", arg.line, arg.column)
        value = int(arg.value)
        if not low <= value <= high:
            raise asm.error(f"{st.name} value {value} out of range {low}..{high}",
                            arg.line, arg.column)
        out += (value % (1 << (8 * size))).to_bytes(size, "little")
    asm.segment.data += bytes(out)


DIRECTIVES: dict[str, Callable[[Assembly, Statement], None]] = {
    ".target": target, ".image": image, ".core": core,
    ".input": io, ".output": io, ".data": data, ".global_data": global_data,
    ".word": values, ".byte": values,
}
