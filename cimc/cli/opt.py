"""`cimc opt`: run a pass pipeline on a .cir module or an ONNX model and print the IR.

This is how passes are tested in isolation:
`cimc opt -p canonicalize in.cir | filecheck in.cir`. With `--emit-asm prog.s`
the scheduled result is also translated into a program and its image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cimc.ir.module import Module
    from cimc.pass_base import Pass
    from cimc.targets import Target

# Separates the cases of one file under --split-input-file.
SPLIT_MARKER = "// -----"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "opt",
        help="run compiler passes on a .cir module or ONNX model and print the IR",
        description="Parse FILE (.cir text IR, or .onnx imported), run the passes of "
        "PIPELINE, verify the IR after each, and print the result.",
    )
    parser.add_argument("file", metavar="FILE", help=".cir or .onnx file ('-': .cir on stdin)")
    parser.add_argument("-p", "--passes", dest="pipeline", default="", metavar="PIPELINE",
                        help="passes to run, e.g. 'canonicalize,fold-qdq' or "
                        "'lower,tile,place{placer=sequential}' (default: none, just print)")
    parser.add_argument("--target", metavar="NAME|FILE",
                        help="target of every backend pass: a bundled name or .toml file "
                        "(default: isaac)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the IR here, not stdout")
    parser.add_argument("--emit-asm", metavar="PROG.s",
                        help="also translate the scheduled result into a program (its crossbar "
                        "image beside it, .img), as `cimc compile` writes them")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="pin an ONNX input's shape, e.g. data=1,3,224,224 (repeatable)")
    parser.add_argument("--print-ir-after-all", action="store_true",
                        help="print the IR to stderr after every pass")
    parser.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                        help="print the IR to stderr after the named pass (repeatable)")
    parser.add_argument("--time-passes", action="store_true",
                        help="print a table of pass times to stderr")
    parser.add_argument("--elide-constants", action="store_true",
                        help="print large constants as 'elided' (parsing that gives zeros)")
    parser.add_argument("--split-input-file", action="store_true",
                        help=f"treat each part between '{SPLIT_MARKER}' lines as its own module")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not verify the IR (input and after each pass)")
    parser.set_defaults(func=opt)


def input_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """Parse NAME=1,3,224,224 options (the name may itself contain '=')."""
    from cimc.diagnostics import CimcError

    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, equals, dims = spec.rpartition("=")
        try:
            if not equals or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
            if any(d < 1 for d in shapes[name]):
                raise ValueError
        except ValueError:
            raise CimcError(f"--input-shape '{spec}': expected NAME=DIMS with "
                            "positive integer sizes, like data=1,3,224,224") from None
    return shapes


def read_text(path: str) -> tuple[str, str]:
    """The text of a .cir file ('-' is stdin) and the name to use in messages."""
    from cimc.diagnostics import CimcError

    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(), path
    except OSError as exc:
        raise CimcError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CimcError(f"{path} is not a text file (expected .cir or .onnx)") from None


def split_cases(text: str) -> list[str]:
    """Cases separated by `// -----` lines, each padded so line numbers stay those of the file."""
    cases, lines, start = [], text.splitlines(keepends=True), 0
    for number, line in enumerate(lines + [SPLIT_MARKER], start=1):
        if line.strip() == SPLIT_MARKER:
            cases.append("\n" * start + "".join(lines[start:number - 1]))
            start = number
    return cases


def backend_pipeline(spec: str, target: Target) -> list[Pass]:
    """The passes of `spec`, its backend passes working for `target`."""
    from cimc.pass_manager import parse_pipeline, set_target

    passes = parse_pipeline(spec)
    set_target(passes, target)
    return passes


def opt(args: argparse.Namespace) -> int:
    from cimc.diagnostics import CimcError
    from cimc.ir.text import parse_module, print_module
    from cimc.outputs import OutputSet, write_atomic
    from cimc.pass_manager import run_pipeline
    from cimc.targets import is_target_name, load_target

    last: Module | None = None  # the module --emit-asm translates

    def run(module: Module) -> str:
        nonlocal last
        last = module
        run_pipeline(
            module, backend_pipeline(args.pipeline, target),
            print_after_all=args.print_ir_after_all,
            print_after=set(args.print_ir_after),
            time_passes=args.time_passes,
            elide_constants=args.elide_constants,
            verify_each=not args.no_verify,
        )
        return print_module(module, elide_constants=args.elide_constants)

    # A bad pipeline or target fails before any input is read; the target is loaded and
    # validated once, for every backend pass.
    reference = args.target or "isaac"
    target = load_target(reference)
    backend_pipeline(args.pipeline, target)
    # An output naming an input, or not writable, fails before any work.
    written: dict[str, str | Path | None] = {"-o": args.output, "--emit-asm": args.emit_asm}
    if args.emit_asm:
        if args.split_input_file:
            raise CimcError("--emit-asm translates one module; drop --split-input-file")
        written["the image beside --emit-asm"] = Path(args.emit_asm).with_suffix(".img")
    OutputSet(written, {"FILE": None if args.file == "-" else args.file,
                        "--target": None if is_target_name(reference) else reference})
    if args.file.endswith(".onnx"):
        from cimc.frontend.importer import import_onnx

        results = [run(import_onnx(args.file, input_shapes(args.input_shape) or None,
                                   verify=not args.no_verify))]
    elif args.input_shape:
        raise CimcError("--input-shape applies to .onnx models only")
    else:
        text, name = read_text(args.file)
        if not args.split_input_file:
            results = [run(parse_module(text, name, verify=not args.no_verify))]
        else:
            # Like mlir-opt: every case runs; errors are reported and the status is 1.
            results, failed = [], False
            for case in split_cases(text):
                try:
                    results.append(run(parse_module(case, name, verify=not args.no_verify)))
                except CimcError as exc:
                    print(f"cimc: {exc}", file=sys.stderr)
                    failed = True
            if failed:
                return 1
    output = f"{SPLIT_MARKER}\n".join(results)
    if args.emit_asm:
        assert last is not None
        emit_program(last, target, args.emit_asm)
    if args.output:
        write_atomic(args.output, output)
    else:
        sys.stdout.write(output)
    return 0


def emit_program(module: Module, target: Target, path: str) -> None:
    """Write the program of scheduled `module` at `path` and its image beside it."""
    from cimc.codegen.generate import plan_and_code
    from cimc.diagnostics import CimcError
    from cimc.emit.image import build_image
    from cimc.emit.program import program_at
    from cimc.outputs import OutputSet
    from cimc.passes.schedule import Schedule

    missing = Schedule.missing_result(module)
    if missing is not None:
        raise CimcError(f"--emit-asm needs a scheduled module ({missing}); run the backend "
                        "passes first, e.g. -p lower,tile,replicate,place,schedule")
    code = plan_and_code(module, target)
    image = Path(path).with_suffix(".img")
    with OutputSet({"--emit-asm": path, "the image beside --emit-asm": image}) as out:
        out.write(path, program_at(module, target, code.cores, path))
        out.write(image, build_image(module, target).to_bytes())
        out.commit()
