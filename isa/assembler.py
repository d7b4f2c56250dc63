"""The assembler: program text (isa/asm.lark) to a Program.

isa/asm_parse.py turns the text into Statements (labels, directives,
instructions) with their positions; the Assembler walks them in order,
checking every operand against the instruction table and resolving labels per
core; the directives are in isa/asm_directives.py. Every error is a
CimcError at file:line:col with the source line and a caret.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from cimc.diagnostics import CimcError, Location, located_error
from cimc.isa.asm_directives import DIRECTIVES
from cimc.isa.asm_parse import Arg, Statement, parse_statements
from cimc.isa.encoding import decode_program, is_program_binary
from cimc.isa.program import CoreStream, DataSegment, Instruction, Program
from cimc.isa.table import BY_MNEMONIC, Field, InstructionSpec, Operand

REGISTER = re.compile(r"r(\d+)$")


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


def load_program(path: str | Path) -> Program:
    """A program from a binary (isa/encoding.py) or an assembly text file (told apart by
    the magic)."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise CimcError(f"cannot read program {path}: {exc.strerror}") from None
    if is_program_binary(blob):
        return decode_program(blob, str(path))
    try:
        text = blob.decode()
    except UnicodeDecodeError:
        raise CimcError(f"{path}: neither a cimc program binary nor UTF-8 assembly text") from None
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
        handler = DIRECTIVES.get(st.name)
        if handler is None:
            close = difflib.get_close_matches(st.name, list(DIRECTIVES), 1)
            hint = (f"; did you mean '{close[0]}'?" if close
                    else f"; known: {', '.join(DIRECTIVES)}")
            raise self.error(f"unknown directive '{st.name}'{hint}", st.line, st.column)
        handler(self, st)

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
