"""The textual form of the tensor IR (.cir): print a Module, parse it back.

`print_module` then `parse_module` gives back the same module, and printing
that again gives the same text byte for byte. The syntax is in cimc/ir/cir.lark
and described in docs/ir.md ("Textual form"). Names, types and ops print in
cimc/ir/printer.py, constant data in cimc/ir/constants.py; the parse tree
becomes a Module in cimc/ir/build.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cimc.diagnostics import CimcError, located_error
from cimc.ir.build import ModuleBuilder
from cimc.ir.constants import constant_text
from cimc.ir.module import Module
from cimc.ir.printer import name_text, op_text, type_text, value_ref
from cimc.ir.verifier import VerifyError
from cimc.ir.verifier import verify as verify_module

if TYPE_CHECKING:
    from lark import Lark

__all__ = ["parse_module", "print_module", "value_ref"]


def print_module(module: Module, elide_constants: bool = False) -> str:
    """The module as .cir text (ends with a newline).

    With `elide_constants`, constants that would print as base64 print as
    `elided` instead; parsing that gives zeros of the constant's type.
    """
    lines = [f"module @{name_text(module.name)} {{"]
    for name in module.inputs:
        lines.append(f"  input %{name_text(name)} : {type_text(module.values[name])}")
    for name, array in module.constants.items():
        data = constant_text(array, elide_constants)
        lines.append(f"  const %{name_text(name)} : {type_text(module.values[name])} = {data}")
    for op in module.ops():
        lines.append("  " + op_text(module, op))
    for name in module.outputs:
        lines.append(f"  output %{name_text(name)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


@functools.cache
def _parser() -> Lark:
    from lark import Lark

    grammar = (Path(__file__).parent / "cir.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_module(text: str, filename: str = "<input>", *, verify: bool = False) -> Module:
    """Parse .cir text into a Module; errors are CimcErrors at file:line:col.

    The parser checks syntax, names (defined once, before use) and constant
    data. With `verify`, the module is also verified (cimc.ir.verifier) and a
    verifier error points at the line of the op or value it names.
    """
    from lark.exceptions import UnexpectedInput

    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    builder = ModuleBuilder(filename, text)
    module = builder.module(tree)
    if verify:
        try:
            verify_module(module)
        except VerifyError as exc:
            place = builder.ops.get(exc.op or "") or builder.defined.get(exc.value or "")
            if place is None:
                raise CimcError(f"{filename}: {exc.message}") from None
            raise builder.error(exc.message, place) from None
    return module


# Descriptions of the grammar's named terminals, for "expected ..." messages.
_TERMINALS = {
    "VALUE": "a value (%name)",
    "SYMBOL": "a module name (@name)",
    "NAME": "a name",
    "STRING": 'a quoted string ("...")',
    "NUMBER": "a number",
    "BASE64": 'base64"..."',
}


def _syntax_error(exc: Any, text: str, filename: str) -> CimcError:
    from lark.exceptions import UnexpectedToken

    expected = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    described = []
    for name in expected:
        if name in _TERMINALS:
            described.append(_TERMINALS[name])
        elif name in ("$END", "<END-OF-FILE>"):
            described.append("end of input")
        else:
            pattern = _parser().get_terminal(name).pattern
            described.append(f"'{pattern.value}'" if pattern.type == "str" else name)
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        message = "unexpected end of input"
        line, column = text.count("\n") + 1, len(text) - text.rfind("\n")
    elif isinstance(exc, UnexpectedToken):
        shown = exc.token if len(exc.token) <= 40 else exc.token[:37] + "..."
        message = f"unexpected '{shown}'"
        line, column = exc.line, exc.column
    else:
        message = f"unexpected character {text[exc.pos_in_stream]!r}"
        line, column = exc.line, exc.column
    described.sort()
    if described:
        message += ", expected " + (
            described[0] if len(described) == 1 else "one of: " + ", ".join(described)
        )
    return located_error(message, filename, text, line, column)
