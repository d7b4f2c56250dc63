"""The assembler: program text (isa/asm.lark) to a Program.

lark parses the text LALR; a Transformer turns each line into Statements
(labels, directives, instructions) with their positions; the Assembler walks
them in order, checking every operand against the instruction table and
resolving labels per core. Every error is a CimcError at file:line:col with
the source line and a caret.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, UnexpectedInput, v_args
from lark.tree import Meta

from cimc.diagnostics import CimcError, Location, located_error
from isa.program import IO_DTYPES, CoreStream, DataSegment, Instruction, IODecl, Program
from isa.table import BY_MNEMONIC, Field, InstructionSpec, Operand

REGISTER = re.compile(r"r(\d+)$")
DTYPE_RANGE = {"i8": (-128, 127), "u8": (0, 255), "i32": (-(1 << 31), (1 << 31) - 1)}
MAX_CORE = (1 << 16) - 1


@dataclass
class Arg:
    """One operand or directive argument as written."""

    kind: str  # "symbol", "integer", "float", "string", "mem", "shape"
    value: Any
    line: int
    column: int


@dataclass
class Statement:
    kind: str  # "label", "directive", "instruction"
    name: str
    line: int
    column: int
    args: list[Arg] = field(default_factory=list)


def _arg(kind: str, value: Any, token: Token) -> Arg:
    return Arg(kind, value, token.line or 0, token.column or 0)


class _ToStatements(Transformer):
    """Parse tree -> flat list of Statements in source order."""

    def start(self, lines: list[list[Statement]]) -> list[Statement]:
        return [statement for line in lines for statement in line]

    def line(self, items: list[Statement | None]) -> list[Statement]:
        return [item for item in items if item is not None]

    def label(self, items: list[Token]) -> Statement:
        (name,) = items
        return Statement("label", str(name), name.line or 0, name.column or 0)

    def directive(self, items: list) -> Statement:
        name, *args = items
        return Statement("directive", str(name), name.line, name.column,
                         [a for a in args if a is not None])

    def instruction(self, items: list) -> Statement:
        name, *args = items
        return Statement("instruction", str(name), name.line, name.column,
                         [a for a in args if a is not None])

    def symbol(self, items: list[Token]) -> Arg:
        return _arg("symbol", str(items[0]), items[0])

    def integer(self, items: list[Token]) -> Arg:
        return _arg("integer", _int(items[0]), items[0])

    def float(self, items: list[Token]) -> Arg:
        return _arg("float", float(items[0]), items[0])

    def string(self, items: list[Token]) -> Arg:
        return _arg("string", str(items[0]), items[0])  # unescaped by the Assembler

    @v_args(meta=True)
    def mem(self, meta: Meta, items: list) -> Arg:
        offset, base = items
        return Arg("mem", (str(base), 0 if offset is None else _int(offset)),
                   meta.line, meta.column)

    @v_args(meta=True)
    def shape(self, meta: Meta, items: list) -> Arg:
        dims = tuple(_int(d) for d in items if d is not None)
        return Arg("shape", dims, meta.line, meta.column)


def _int(token: str) -> int:
    """An INT token: hexadecimal with 0x, else decimal (leading zeros allowed: 007 is 7)."""
    return int(token, 16 if token.lstrip("+-")[:2] in ("0x", "0X") else 10)


@cache
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("asm.lark")).read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_statements(text: str, filename: str = "<input>") -> list[Statement]:
    """The statements of an assembly text (syntax only)."""
    try:
        tree = _parser().parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as exc:
        message = _syntax_message(exc, text)
        raise located_error(message, filename, text, exc.line, exc.column) from None
    return _ToStatements().transform(tree)


def _syntax_message(exc: UnexpectedInput, text: str) -> str:
    token = getattr(exc, "token", None)
    if token is not None:
        if token.type == "$END" or token.type == "_NL":
            return "unexpected end of line"
        return f"unexpected {token.value!r}"
    char = text[exc.pos_in_stream] if exc.pos_in_stream is not None else "?"
    return f"unexpected character {char!r}"


def assemble_text(text: str, filename: str = "<input>") -> Program:
    """Assemble program text; `filename` is used in error messages."""
    return Assembler(text, filename).run(parse_statements(text, filename))


def assemble_file(path: str | Path) -> Program:
    """Assemble the program text in `path`."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CimcError(f"cannot read assembly file {path}: {exc}") from None
    return assemble_text(text, str(path))


@dataclass
class _Fixup:
    """A branch operand waiting for its label: instruction index, operand slot, label."""

    index: int
    slot: int
    arg: Arg


class Assembler:
    """Builds a Program from statements, one core section at a time."""

    def __init__(self, text: str, filename: str):
        self.text, self.filename = text, filename
        self.program = Program()
        self.stream: CoreStream | None = None
        self.segment: DataSegment | None = None
        self.labels: dict[str, int] = {}
        self.label_lines: dict[str, int] = {}
        self.fixups: list[_Fixup] = []
        self.core_lines: dict[int, int] = {}

    def error(self, message: str, line: int, column: int) -> CimcError:
        return located_error(message, self.filename, self.text, line, column)

    def run(self, statements: list[Statement]) -> Program:
        for st in statements:
            if st.kind == "label":
                self.label(st)
            elif st.kind == "directive":
                self.directive(st)
            else:
                self.instruction(st)
        self.close_core()
        self.program.streams = dict(sorted(self.program.streams.items()))
        self.program.data = dict(sorted(self.program.data.items()))
        return self.program

    # --- core sections and labels -------------------------------------------------

    def close_core(self) -> None:
        """Resolve the branch targets of the current core section."""
        if self.stream is None:
            return
        for fix in self.fixups:
            if fix.arg.value not in self.labels:
                close = difflib.get_close_matches(str(fix.arg.value), list(self.labels), 1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise self.error(f"undefined label '{fix.arg.value}' in core "
                                 f"{self.stream.core}{hint}", fix.arg.line, fix.arg.column)
            ins = self.stream.instructions[fix.index]
            values = list(ins.operands)
            values[fix.slot] = self.labels[str(fix.arg.value)]
            ins.operands = tuple(values)
        self.labels, self.label_lines, self.fixups = {}, {}, []

    def label(self, st: Statement) -> None:
        if self.stream is None:
            raise self.error(f"label '{st.name}' before any .core directive", st.line, st.column)
        if REGISTER.match(st.name):
            raise self.error(f"'{st.name}' is a register name and cannot be a label",
                             st.line, st.column)
        if st.name in self.labels:
            raise self.error(f"duplicate label '{st.name}' (first defined at line "
                             f"{self.label_lines[st.name]})", st.line, st.column)
        self.labels[st.name] = len(self.stream.instructions)
        self.label_lines[st.name] = st.line

    # --- directives --------------------------------------------------------------

    def directive(self, st: Statement) -> None:
        handlers = {
            ".target": self.d_target, ".image": self.d_image, ".core": self.d_core,
            ".input": self.d_io, ".output": self.d_io, ".data": self.d_data,
            ".word": self.d_values, ".byte": self.d_values,
        }
        handler = handlers.get(st.name)
        if handler is None:
            close = difflib.get_close_matches(st.name, list(handlers), 1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(handlers)}"
            raise self.error(f"unknown directive '{st.name}'{hint}", st.line, st.column)
        handler(st)

    def expect(self, st: Statement, usage: str, *kinds: str) -> list[Arg]:
        """The directive's args, checked against `kinds` (alternatives joined by |)."""
        if len(st.args) != len(kinds):
            raise self.error(f"{st.name} takes {len(kinds)} argument(s): {st.name} {usage}",
                             st.line, st.column)
        for arg, kind in zip(st.args, kinds, strict=True):
            if arg.kind not in kind.split("|"):
                raise self.error(f"bad argument for {st.name}: expected {st.name} {usage}",
                                 arg.line, arg.column)
        return st.args

    def text_of(self, arg: Arg) -> str:
        if arg.kind == "symbol":
            return str(arg.value)
        try:
            return str(json.loads(str(arg.value)))
        except ValueError:
            raise self.error("bad escape in string", arg.line, arg.column) from None

    def d_target(self, st: Statement) -> None:
        (name,) = self.expect(st, "NAME", "symbol|string")
        if self.program.target is not None:
            raise self.error(".target given twice", st.line, st.column)
        self.program.target = self.text_of(name)

    def d_image(self, st: Statement) -> None:
        (path,) = self.expect(st, '"FILE"', "symbol|string")
        if self.program.image is not None:
            raise self.error(".image given twice", st.line, st.column)
        self.program.image = self.text_of(path)

    def d_core(self, st: Statement) -> None:
        (number,) = self.expect(st, "N", "integer")
        core = number.value
        if not 0 <= core <= MAX_CORE:
            raise self.error(f"core number {core} out of range 0..{MAX_CORE}",
                             number.line, number.column)
        if core in self.program.streams:
            raise self.error(f"core {core} already has a section (line {self.core_lines[core]})",
                             number.line, number.column)
        self.close_core()
        self.stream = self.program.streams[core] = CoreStream(core)
        self.core_lines[core] = st.line
        self.segment = None

    def d_io(self, st: Statement) -> None:
        usage = "NAME, ADDR, DTYPE, [SHAPE], SCALE, ZP"
        name, addr, dtype, shape, scale, zp = self.expect(
            st, usage, "symbol|string", "integer", "symbol", "shape", "float|integer", "integer")
        if dtype.value not in IO_DTYPES:
            raise self.error(f"unknown dtype '{dtype.value}'; expected one of "
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
                raise self.error(message, arg.line, arg.column)
        decls = self.program.inputs if st.name == ".input" else self.program.outputs
        label = self.text_of(name)
        if any(d.name == label for d in self.program.inputs + self.program.outputs):
            raise self.error(f"'{label}' is already declared", name.line, name.column)
        decls.append(IODecl(label, addr.value, dtype.value, shape.value, float(scale.value),
                            zp.value, Location(self.filename, st.line, st.column)))

    def d_data(self, st: Statement) -> None:
        (addr,) = self.expect(st, "ADDR", "integer")
        if self.stream is None:
            raise self.error(".data before any .core directive", st.line, st.column)
        if int(addr.value) < 0:
            raise self.error("address must be >= 0", addr.line, addr.column)
        self.segment = DataSegment(int(addr.value), b"")
        self.program.data.setdefault(self.stream.core, []).append(self.segment)

    def d_values(self, st: Statement) -> None:
        if self.segment is None:
            raise self.error(f"{st.name} outside a .data block", st.line, st.column)
        size, low, high = (4, -(1 << 31), (1 << 32) - 1) if st.name == ".word" else (1, -128, 255)
        if not st.args:
            raise self.error(f"{st.name} needs at least one value", st.line, st.column)
        out = bytearray()
        for arg in st.args:
            if arg.kind != "integer":
                raise self.error(f"{st.name} takes integers", arg.line, arg.column)
            value = int(arg.value)
            if not low <= value <= high:
                raise self.error(f"{st.name} value {value} out of range {low}..{high}",
                                 arg.line, arg.column)
            out += (value % (1 << (8 * size))).to_bytes(size, "little")
        self.segment.data += bytes(out)

    # --- instructions ------------------------------------------------------------

    def instruction(self, st: Statement) -> None:
        spec = BY_MNEMONIC.get(st.name)
        if spec is None:
            close = difflib.get_close_matches(st.name, list(BY_MNEMONIC), 1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.error(f"unknown instruction '{st.name}'{hint}", st.line, st.column)
        if self.stream is None:
            raise self.error("instruction before any .core directive", st.line, st.column)
        if len(st.args) != len(spec.operands):
            raise self.error(f"{spec.mnemonic} takes {len(spec.operands)} operand(s) "
                             f"({spec.syntax}), got {len(st.args)}", st.line, st.column)
        values: list[int] = []
        for operand, arg in zip(spec.operands, st.args, strict=True):
            values.extend(self.operand(spec, operand, arg, len(values)))
        self.stream.instructions.append(
            Instruction(spec.mnemonic, tuple(values), Location(self.filename, st.line, st.column)))

    def operand(self, spec: InstructionSpec, operand: Operand, arg: Arg, slot: int) -> list[int]:
        """Field values of one operand; a label operand is left for close_core."""
        what = f"operand '{operand.name}' of {spec.mnemonic}"
        if operand.kind in ("mem", "gmem"):
            if arg.kind != "mem":
                raise self.error(f"{what} must be a memory operand offset(rN)",
                                 arg.line, arg.column)
            base, offset = arg.value
            return [self.register(base, arg), self.fits(operand.fields[1], offset, what, arg)]
        if operand.kind == "reg":
            if arg.kind != "symbol" or not REGISTER.match(str(arg.value)):
                raise self.error(f"{what} must be a register r0..r15", arg.line, arg.column)
            return [self.register(str(arg.value), arg)]
        if operand.kind == "label":
            if arg.kind != "symbol" or REGISTER.match(str(arg.value)):
                raise self.error(f"{what} must be a label", arg.line, arg.column)
            assert self.stream is not None
            self.fixups.append(_Fixup(len(self.stream.instructions), slot, arg))
            return [0]
        if arg.kind != "integer":
            raise self.error(f"{what} must be an integer", arg.line, arg.column)
        return [self.fits(operand.fields[0], int(arg.value), what, arg)]

    def register(self, name: str, arg: Arg) -> int:
        match = REGISTER.match(name)
        if not match:
            raise self.error(f"expected a register r0..r15, got '{name}'", arg.line, arg.column)
        number = int(match.group(1))
        if number > 15:
            raise self.error(f"register {name} out of range r0..r15", arg.line, arg.column)
        return number

    def fits(self, fld: Field, value: int, what: str, arg: Arg) -> int:
        if not fld.min <= value <= fld.max:
            raise self.error(f"{value} out of range for {what}: {fld.min}..{fld.max}",
                             arg.line, arg.column)
        return value
