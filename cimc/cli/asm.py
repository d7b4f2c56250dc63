"""`cimc asm prog.s -o prog.bin`: assemble program text into a program binary.

A program names its crossbar image and its target file relative to itself;
when the binary goes to another directory those paths are rewritten so that
they still name the same files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cimc.isa.program import Program


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "asm", help="assemble program text into a program binary",
        description="Assemble a cimc assembly file (see docs/isa.md) into a program binary.")
    parser.add_argument("source", metavar="PROG.s", help="assembly text")
    parser.add_argument("-o", "--output", metavar="PROG.bin",
                        help="binary to write (default: the source with suffix .bin)")
    parser.set_defaults(func=asm_command)


def referenced_files(program: Program, path: str | Path) -> dict[str, Path | None]:
    """The files the program at `path` names: its image and its target file (if any)."""
    from cimc.targets import is_target_name

    base = Path(path).parent
    target = program.target
    return {"(the program's image)": base / program.image if program.image else None,
            "(the program's target file)":
                base / target if target and not is_target_name(target) else None}


def relocate(program: Program, source: str | Path, output: str | Path) -> None:
    """Rewrite the relative `.image` and target-file paths of a program moving from
    `source` to `output` so that they name the same files."""
    from cimc.targets import is_target_name

    old, new = Path(source).resolve().parent, Path(output).resolve().parent
    if old == new:
        return

    def moved(reference: str) -> str:
        if Path(reference).is_absolute():
            return reference
        return Path(os.path.relpath(old / reference, new)).as_posix()

    if program.image:
        program.image = moved(program.image)
    if program.target and not is_target_name(program.target):
        path = moved(program.target)
        program.target = path if not is_target_name(path) else f"./{path}"


def asm_command(args: argparse.Namespace) -> int:
    from cimc.isa.assembler import assemble_file
    from cimc.isa.encoding import encode_program
    from cimc.outputs import OutputSet

    output = Path(args.output) if args.output else Path(args.source).with_suffix(".bin")
    OutputSet({"-o": output}, {"PROG.s": args.source})  # before reading the source
    program = assemble_file(args.source)
    with OutputSet({"-o": output}, {"PROG.s": args.source,
                                    **referenced_files(program, args.source)}) as out:
        relocate(program, args.source, output)
        out.write(output, encode_program(program))
        out.commit()
    return 0
