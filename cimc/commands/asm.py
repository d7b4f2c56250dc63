"""`cimc asm prog.s -o prog.bin`: assemble program text into a program binary."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "asm", help="assemble program text into a program binary",
        description="Assemble a cimc assembly file (see docs/isa.md) into a program binary.")
    parser.add_argument("source", metavar="PROG.s", help="assembly text")
    parser.add_argument("-o", "--output", metavar="PROG.bin",
                        help="binary to write (default: the source with suffix .bin)")
    parser.set_defaults(func=asm_command)


def asm_command(args: argparse.Namespace) -> int:
    from cimc.outputs import write_atomic
    from isa.assembler import assemble_file
    from isa.encoding import encode_program

    output = Path(args.output) if args.output else Path(args.source).with_suffix(".bin")
    program = assemble_file(args.source)
    write_atomic(output, encode_program(program))
    return 0
