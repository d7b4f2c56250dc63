"""`cimc run MODEL.onnx --inputs X --outputs Y`: run a model on inputs with an engine.

The model is imported and brought through the frontend pipeline (canonicalize,
fold-qdq); the engine then evaluates it on every input batch. A float model
runs in float unless `--calibrate` gives data to quantize it with first.
Engines: `reference`, the IR reference interpreter (cimc.reference); `sim`,
the program compiled for `--target` run on the simulator (cimc.backend_run).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from cimc.ir import Module

# Batches of the model evaluated per call of the engine, to bound memory.
BATCHES_PER_CALL = 32


def _reference(module: Module, feeds: dict[str, np.ndarray],
               target: str) -> dict[str, np.ndarray]:
    from cimc.reference import run_module

    return run_module(module, feeds)


def _sim(module: Module, feeds: dict[str, np.ndarray], target: str) -> dict[str, np.ndarray]:
    from cimc.backend_run import run_on_simulator

    return run_on_simulator(module, feeds, target)


# Engine name -> function running a frontend-lowered module on stacked input batches
# (the target is what the `sim` engine compiles for).
ENGINES: dict[str, Callable[[Module, dict[str, np.ndarray], str], dict[str, np.ndarray]]] = {
    "reference": _reference,
    "sim": _sim,
}


def register(subparsers: argparse._SubParsersAction) -> None:
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
        "--engine", choices=list(ENGINES), default="reference", help="what runs the model"
    )
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
        help="activation type when quantizing with --calibrate (default int8)",
    )
    parser.set_defaults(func=run)


def prepare(
    model: str,
    input_shapes: dict[str, tuple[int, ...]],
    calibrate: str | None = None,
    activations: str = "int8",
) -> Module:
    """Import `model` (quantizing it with the data in `calibrate`) and run the frontend."""
    import tempfile
    from pathlib import Path

    from cimc.diagnostics import CimcError
    from cimc.frontend import import_onnx
    from cimc.pass_manager import parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND
    from cimc.quantize import is_quantized, quantize_onnx
    from cimc.tensor_io import read_inputs

    module = import_onnx(model, input_shapes)
    if calibrate is not None:
        if is_quantized(module):
            raise CimcError(f"{model}: the model is already quantized; drop --calibrate")
        inputs = {name: module.values[name] for name in module.inputs}
        data = read_inputs(calibrate, inputs)
        with tempfile.TemporaryDirectory(prefix="cimc-run-") as tmp:
            quantized = Path(tmp) / Path(model).name
            quantize_onnx(model, quantized, inputs, data, activations)
            module = import_onnx(str(quantized), input_shapes)
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    return module


def evaluate(module: Module, feeds: dict[str, np.ndarray], engine: str,
             target: str = "isaac") -> dict[str, np.ndarray]:
    """Run `engine` on the stacked batches of `feeds`, BATCHES_PER_CALL at a time."""
    import numpy as np

    run_engine = ENGINES[engine]
    batch = {name: module.values[name].shape[0] for name in module.inputs}
    total = min(len(feeds[name]) // batch[name] for name in module.inputs)
    parts = []
    for start in range(0, total, BATCHES_PER_CALL):
        stop = min(start + BATCHES_PER_CALL, total)
        chunk = {name: feeds[name][start * batch[name] : stop * batch[name]] for name in feeds}
        parts.append(run_engine(module, chunk, target))
    return {name: np.concatenate([p[name] for p in parts]) for name in module.outputs}


def run(args: argparse.Namespace) -> int:
    from cimc.commands.opt import input_shapes
    from cimc.tensor_io import read_inputs, write_outputs

    module = prepare(args.model, input_shapes(args.input_shape), args.calibrate, args.activations)
    feeds = read_inputs(args.inputs, {name: module.values[name] for name in module.inputs})
    outputs = evaluate(module, feeds, args.engine, args.target)
    write_outputs(args.outputs, outputs, {name: module.values[name] for name in module.outputs})
    return 0
