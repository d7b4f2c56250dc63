"""`cimc disasm prog.bin [-o prog.s]`: a program binary back to assembly text.

Written to another directory, the program's relative image and target-file
paths are rewritten as `cimc asm` does.
"""

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

    from cimc.cli.asm import referenced_files, relocate
    from cimc.diagnostics import CimcError
    from cimc.isa.disassembler import disassemble
    from cimc.isa.encoding import decode_program
    from cimc.outputs import OutputSet

    OutputSet({"-o": args.output}, {"PROG.bin": args.binary})  # before reading the binary
    try:
        blob = Path(args.binary).read_bytes()
    except OSError as exc:
        raise CimcError(f"cannot read program binary {args.binary}: {exc.strerror}") from None
    program = decode_program(blob, args.binary)
    if not args.output:
        sys.stdout.write(disassemble(program))
        return 0
    with OutputSet({"-o": args.output}, {"PROG.bin": args.binary,
                                         **referenced_files(program, args.binary)}) as out:
        relocate(program, args.binary, args.output)
        out.write(args.output, disassemble(program))
        out.commit()
    return 0
