"""`cimc opt`: run a pass pipeline on a .cir module or an ONNX model and print the IR.

This is how passes are tested in isolation:
`cimc opt -p canonicalize in.cir | filecheck in.cir`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "opt",
        help="run compiler passes on a .cir module or ONNX model and print the IR",
        description="Parse FILE (.cir text IR, or .onnx imported), run the passes of "
        "PIPELINE, verify the IR after each, and print the result.",
    )
    parser.add_argument("file", metavar="FILE", help=".cir or .onnx file ('-': .cir on stdin)")
    parser.add_argument("-p", "--passes", dest="pipeline", default="", metavar="PIPELINE",
                        help="passes to run, e.g. 'canonicalize,fold-qdq' or 'tile{rows=64}' "
                        "(default: none, just print)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the IR here, not stdout")
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
        except ValueError:
            raise CimcError(f"--input-shape '{spec}': expected NAME=DIMS like "
                            "data=1,3,224,224") from None
    return shapes


def opt(args: argparse.Namespace) -> int:
    from cimc.diagnostics import CimcError
    from cimc.ir_text import parse_module, print_module
    from cimc.outputs import write_atomic
    from cimc.pass_manager import parse_pipeline, run_pipeline

    passes = parse_pipeline(args.pipeline)
    path = args.file
    if path.endswith(".onnx"):
        from cimc.frontend import import_onnx

        module = import_onnx(path, input_shapes(args.input_shape) or None)
    else:
        if args.input_shape:
            raise CimcError("--input-shape applies to .onnx models only")
        if path == "-":
            text, path = sys.stdin.read(), "<stdin>"
        else:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise CimcError(f"cannot read {path}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise CimcError(f"{path} is not a text file (expected .cir or .onnx)") from None
        module = parse_module(text, path, verify=not args.no_verify)
    run_pipeline(
        module, passes,
        print_after_all=args.print_ir_after_all,
        print_after=set(args.print_ir_after),
        time_passes=args.time_passes,
        elide_constants=args.elide_constants,
        verify_each=not args.no_verify,
    )
    text = print_module(module, elide_constants=args.elide_constants)
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
