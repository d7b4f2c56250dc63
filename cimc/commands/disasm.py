"""`cimc disasm prog.bin [-o prog.s]`: a program binary back to assembly text."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "disasm", help="disassemble a program binary into assembly text",
        description="Print (or write) the assembly text of a program binary; "
                    "the text assembles back to the same binary.")
    parser.add_argument("binary", metavar="PROG.bin", help="program binary from `cimc asm`")
    parser.add_argument("-o", "--output", metavar="PROG.s", help="text file (default: stdout)")
    parser.set_defaults(func=disasm_command)


def disasm_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cimc.diagnostics import CimcError
    from cimc.outputs import write_atomic
    from isa.disassembler import disassemble
    from isa.encoding import decode_program

    try:
        blob = Path(args.binary).read_bytes()
    except OSError as exc:
        raise CimcError(f"cannot read program binary {args.binary}: {exc.strerror}") from None
    text = disassemble(decode_program(blob, args.binary))
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
