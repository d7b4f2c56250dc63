"""Assembly text (isa/asm.lark) to Statements: syntax only, with positions.

lark parses the text LALR and a Transformer turns each line into Statements
(labels, directives, instructions); isa/assembler.py checks what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, UnexpectedInput, v_args
from lark.tree import Meta

from cimc.diagnostics import located_error


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
