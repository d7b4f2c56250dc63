"""`cimc run MODEL.onnx --inputs X --outputs Y`: run a model on inputs with an engine.

The model is imported and brought through the frontend pipeline (canonicalize,
fold-qdq); the engine then evaluates it on every input batch.
Engines: `sim` (the default), the program compiled for `--target` run on the
simulator (cimc.api.compile, Program.simulate); `reference`, the IR reference
interpreter (cimc.api.reference_outputs). A float model runs in float on the reference engine unless
`--calibrate` is given; the sim engine always quantizes it first.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cimc.ir.module import Module

# sim: the program compiled for --target, simulated; reference: the IR interpreter.
ENGINES = ("sim", "reference")


def register(subparsers: argparse._SubParsersAction) -> None:
    from cimc.cli.compile import add_backend_options
    from cimc.options import ACTIVATIONS

    parser = subparsers.add_parser(
        "run",
        help="run a model on inputs and write its outputs",
        description="Import MODEL.onnx, run the frontend passes, evaluate it on the inputs "
        "with an engine and write the outputs (.npy for one output, .npz keyed by name).",
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="float or QDQ-quantized ONNX model")
    parser.add_argument(
        "--inputs",
        required=True,
        metavar="X",
        help=".npy (single-input model) or .npz keyed by input name; batches stack on axis 0",
    )
    parser.add_argument("--outputs", required=True, metavar="Y", help=".npy or .npz to write")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line on a terminal (warnings and errors still show)")
    parser.add_argument(
        "--engine", choices=ENGINES, default="sim",
        help="sim: compile for --target and simulate (default); reference: the IR interpreter",
    )
    parser.add_argument("--report", metavar="R.json",
                        help="write the report: compile and simulated figures (sim engine)")
    parser.add_argument(
        "--target", default="isaac", metavar="NAME|FILE",
        help="target the sim engine compiles for (default: isaac)"
    )
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="pin an input's dynamic shape, e.g. input=1,3,224,224 (repeatable)",
    )
    parser.add_argument(
        "--calibrate",
        metavar="DATA",
        help="quantize a float model first, with ranges from these inputs (.npy/.npz); "
        "for a QDQ model, the LSTM/GRU layers its quantizer left float",
    )
    parser.add_argument(
        "--activations",
        choices=ACTIVATIONS,
        default="int8",
        help="activation type when a float model is quantized (default int8)",
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def prepare(
    model: str,
    input_shapes: dict[str, tuple[int, ...]],
    calibrate: str | None = None,
    activations: str = "int8",
    engine: str = "reference",
    target: str | None = None,
) -> Module:
    """Import `model` (quantized first unless the reference engine runs it in float;
    refused first if its weights cannot fit `target`) and run the frontend passes
    (cimc.api.prepare)."""
    from cimc.api import prepare as prepare_model

    return prepare_model(model, input_shapes, calibrate, activations,
                         keep_float=engine == "reference", target=target)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cimc.api import compile as compile_program
    from cimc.api import reference_outputs
    from cimc.cli.opt import input_shapes
    from cimc.diagnostics import CimcError
    from cimc.outputs import OutputSet
    from cimc.targets import is_target_name
    from cimc.tensor_io import encode_outputs, read_inputs

    if Path(args.outputs).suffix.lower() not in (".npy", ".npz"):
        raise CimcError(f"{args.outputs}: unknown output file type; use .npy or .npz")
    inputs = {"MODEL.onnx": args.model, "--inputs": args.inputs, "--calibrate": args.calibrate,
              "--target": None if is_target_name(args.target) else args.target}
    with OutputSet({"--outputs": args.outputs, "--report": args.report}, inputs) as out:
        module = prepare(args.model, input_shapes(args.input_shape), args.calibrate,
                         args.activations, args.engine,
                         args.target if args.engine == "sim" else None)
        feeds = read_inputs(args.inputs, {name: module.values[name] for name in module.inputs})
        report: dict[str, Any] = {"engine": args.engine}
        if args.engine == "sim":
            program = compile_program(
                module, args.target, pipeline=args.pipeline, stream=args.stream,
                replicate=args.replicate, placer=args.placer, place_effort=args.place_effort,
                place_time_limit=args.place_time_limit, partition=args.partition,
                batch=args.batch)
            simulation = program.simulate(feeds)
            outputs = simulation.outputs
            report.update(simulation.figures)
        else:
            outputs = reference_outputs(module, feeds)
        out.write(args.outputs, encode_outputs(
            args.outputs, outputs, {name: module.values[name] for name in module.outputs}))
        if args.report:
            out.write(args.report, json.dumps(report, indent=2, sort_keys=True) + "\n")
        out.commit()
    return 0
