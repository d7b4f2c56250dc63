"""`cimc run MODEL.onnx --inputs X --outputs Y`: run a model on inputs with an engine.

The model is imported and brought through the frontend pipeline (canonicalize,
fold-qdq); the engine then evaluates it on every input batch.
Engines: `sim` (the default), the program compiled for `--target` run on the
simulator (cimc.backend_run); `reference`, the IR reference interpreter
(cimc.reference). A float model runs in float on the reference engine unless
`--calibrate` is given; the sim engine always quantizes it first.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from cimc.ir import Module
    from cimc.pipeline import BackendOptions

# Batches of the model evaluated per call of the engine, to bound memory.
BATCHES_PER_CALL = 32


def _reference(module: Module, feeds: dict[str, np.ndarray], options: BackendOptions,
               report: dict[str, Any]) -> dict[str, np.ndarray]:
    from cimc.reference import run_module

    report["engine"] = "reference"
    return run_module(module, feeds)


def _sim(module: Module, feeds: dict[str, np.ndarray], options: BackendOptions,
         report: dict[str, Any]) -> dict[str, np.ndarray]:
    from cimc.backend_run import run_on_simulator

    report["engine"] = "sim"
    return run_on_simulator(module, feeds, options, report)


# Engine name -> function running a frontend-lowered module on stacked input batches
# (the `sim` engine compiles with the backend options; the function fills the report).
Feeds = dict[str, "np.ndarray"]
ENGINES: dict[str, Callable[[Module, Feeds, BackendOptions, dict[str, Any]], Feeds]] = {
    "sim": _sim,
    "reference": _reference,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from cimc.commands.compile import add_backend_options

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
    parser.add_argument(
        "--engine", choices=list(ENGINES), default="sim",
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
        help="quantize a float model first, with ranges from these inputs (.npy/.npz)",
    )
    parser.add_argument(
        "--activations",
        choices=["int8", "uint8"],
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
    refused first if its weights cannot fit `target`) and run the frontend passes."""
    from cimc.pass_manager import parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND
    from cimc.quantize import import_model
    from targets import load_target

    module = import_model(model, input_shapes, calibrate, activations,
                          keep_float=engine == "reference",
                          target=load_target(target) if target is not None else None)
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    return module


def evaluate(module: Module, feeds: dict[str, np.ndarray], engine: str,
             options: BackendOptions | str = "isaac",
             report: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Run `engine` on the stacked batches of `feeds`.

    The reference takes BATCHES_PER_CALL batches at a time to bound memory; the
    simulator takes them all in one run, so the program is compiled once.
    """
    from cimc.pipeline import BackendOptions
    from cimc.reference.batch import join_batches

    run_engine = ENGINES[engine]
    if isinstance(options, str):
        options = BackendOptions(target=options)
    # A 0-d input cannot be stacked: it holds one batch.
    batch = {name: (module.values[name].shape or (0,))[0] for name in module.inputs}
    counts = {name: len(feeds[name]) // batch[name] if batch[name] else 1
              for name in module.inputs}
    total = min(counts.values(), default=1)
    per_call = max(total, 1) if engine == "sim" else BATCHES_PER_CALL
    report = {} if report is None else report
    parts = []
    for start in range(0, total, per_call):
        stop = min(start + per_call, total)
        chunk = {name: feeds[name][start * batch[name] : stop * batch[name]] if batch[name]
                 else feeds[name] for name in feeds}
        parts.append(run_engine(module, chunk, options, report))
    return {name: join_batches([p[name] for p in parts]) for name in module.outputs}


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cimc.commands.compile import backend_options
    from cimc.commands.opt import input_shapes
    from cimc.diagnostics import CimcError
    from cimc.outputs import OutputSet
    from cimc.tensor_io import encode_outputs, read_inputs
    from targets import is_target_name

    if Path(args.outputs).suffix.lower() not in (".npy", ".npz"):
        raise CimcError(f"{args.outputs}: unknown output file type; use .npy or .npz")
    inputs = {"MODEL.onnx": args.model, "--inputs": args.inputs, "--calibrate": args.calibrate,
              "--target": None if is_target_name(args.target) else args.target}
    with OutputSet({"--outputs": args.outputs, "--report": args.report}, inputs) as out:
        module = prepare(args.model, input_shapes(args.input_shape), args.calibrate,
                         args.activations, args.engine,
                         args.target if args.engine == "sim" else None)
        feeds = read_inputs(args.inputs, {name: module.values[name] for name in module.inputs})
        report: dict[str, Any] = {}
        outputs = evaluate(module, feeds, args.engine, backend_options(args), report)
        out.write(args.outputs, encode_outputs(
            args.outputs, outputs, {name: module.values[name] for name in module.outputs}))
        if args.report:
            out.write(args.report, json.dumps(report, indent=2, sort_keys=True) + "\n")
        out.commit()
    return 0
