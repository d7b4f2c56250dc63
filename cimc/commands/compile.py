"""`cimc MODEL.onnx -o prog.s`: compile an ONNX model (QDQ, or float quantized first)
for a CIM target.

Runs import-onnx, the frontend pipeline and the backend pipeline
(cimc/pipeline.py), writing prog.s and its crossbar image prog.img beside
it; optionally the C data header of test inputs and expected outputs
(`--emit-data`) and a JSON report (`--report`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from cimc.backend_codegen import CoreCode
    from cimc.ir import Module
    from cimc.pass_manager import PassTiming
    from cimc.pipeline import BackendOptions
    from isa.image import Image
    from targets import Target


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """The flags that choose how the backend maps the model (shared with `cimc run`)."""
    from cimc.commands.numbers import MAX_SECONDS, real, whole

    parser.add_argument("--pipeline", choices=("latency", "throughput"), default="latency",
                        help="latency: one inference, layers start as soon as their input rows "
                        "exist; throughput: --stream inferences flow through the pipeline")
    parser.add_argument("--stream", type=whole(1), default=0, metavar="N",
                        help="inferences per run in throughput mode (default 4)")
    parser.add_argument("--replicate", type=real(0, 1), default=None, metavar="BUDGET",
                        help="copy slow layers' weights within BUDGET (0..1) x the target's "
                        "crossbars (e.g. 0.9; 0 = off, the default)")
    parser.add_argument("--placer", choices=("cpsat", "anneal", "sequential", "snake"),
                        default="cpsat", help="how place assigns blocks to cores "
                        "(docs/placement.md; default cpsat)")
    parser.add_argument("--place-effort", type=real(0, 100), default=None, metavar="E",
                        help="work of the cpsat and anneal placers, counted in moves and "
                        "solver steps, never in seconds, so the program is the same on any "
                        "machine (default 1; 0.1 is quick; at most 100)")
    parser.add_argument("--place-time-limit", type=real(0, MAX_SECONDS, above=True), default=None,
                        metavar="SECONDS",
                        help="wall-clock safety net of the placers (default none, at most a "
                        "day); if it stops the search, a warning says the program depends on "
                        "the machine")


def backend_options(args: argparse.Namespace) -> BackendOptions:
    """BackendOptions from parsed `add_backend_options` flags and `--target`."""
    from cimc.pipeline import BackendOptions

    return BackendOptions(args.target, args.pipeline, args.stream, args.replicate, args.placer,
                          args.place_time_limit, args.place_effort)


def register(subparsers: argparse._SubParsersAction) -> None:
    from cimc.commands.numbers import whole

    parser = subparsers.add_parser(
        "compile", help="compile an ONNX model to a CIM program (the default command)",
        description="Compile an ONNX model (QDQ-quantized, or float: quantized first) into an "
        "assembly program, its "
        "crossbar image (beside it, .img) and optionally a C data header and a report.")
    parser.add_argument("model", metavar="MODEL.onnx",
                        help="the model: QDQ-quantized, or float (quantized first: with "
                        "--calibrate data, else on random inputs with a warning)")
    parser.add_argument("--calibrate", metavar="DATA",
                        help="quantize a float model with ranges from these inputs (.npy/.npz)")
    parser.add_argument("--activations", choices=["int8", "uint8"], default="int8",
                        help="activation type when quantizing a float model (default int8)")
    parser.add_argument("-o", "--output", required=True, metavar="PROG.s",
                        help="the program to write; the crossbar image goes beside it (.img)")
    parser.add_argument("--target", default="isaac", metavar="NAME|FILE",
                        help="target name or .toml file (default: isaac)")
    parser.add_argument("--emit-data", metavar="DATA.h",
                        help="write a C header of quantized inputs and expected outputs "
                        "(needs --inputs)")
    parser.add_argument("--inputs", metavar="X.npy",
                        help="float test inputs, samples on axis 0 (for --emit-data and the "
                        "report's simulation)")
    parser.add_argument("--count", type=whole(1), metavar="N",
                        help="use the first N inputs only")
    parser.add_argument("--labels", metavar="Y.npy", help="labels of the inputs, for the header")
    parser.add_argument("--data-name", metavar="NAME",
                        help="prefix of the header's names (default: from the header file name)")
    parser.add_argument("--report", metavar="R.json", help="write the compile report (JSON)")
    add_backend_options(parser)
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="pin an ONNX input's shape, e.g. data=1,3,32,32 (repeatable)")
    parser.add_argument("--time-passes", action="store_true",
                        help="print a table of pass times to stderr")
    parser.add_argument("--print-ir-after-all", action="store_true",
                        help="print the IR to stderr after every pass")
    parser.set_defaults(func=compile_command)


@dataclass
class Compiled:
    """The outcome of compiling one model."""

    integer: Module  # after the frontend: what the reference interpreter runs
    module: Module  # after the backend
    target: Target
    cores: dict[int, CoreCode]
    program: str  # the program text (for the path given to compile_model)
    image: Image  # its crossbar programming image
    timings: list[PassTiming] = field(default_factory=list)
    placement: dict[str, Any] = field(default_factory=dict)  # the place pass's summary


def compile_model(model: str, output: str, target_name: str = "isaac",
                  input_shapes: dict[str, tuple[int, ...]] | None = None,
                  print_after_all: bool = False, time_passes: bool = False,
                  calibrate: str | None = None, activations: str = "int8",
                  pipeline: str = "latency", stream: int = 0,
                  replicate: float | None = None, placer: str = "cpsat",
                  place_time_limit: float | None = None, write: bool = True,
                  place_effort: float | None = None) -> Compiled:
    """Compile `model` for the program path `output`, writing it (+ .img beside it)
    unless `write` is False; the modules, program, image and timings for reports and tests."""
    import copy

    from cimc.backend_codegen import generate
    from cimc.outputs import OutputSet
    from cimc.pass_manager import PassTiming, parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND, BackendOptions, backend_passes
    from cimc.quantize import import_model
    from passes.emit_asm import emit
    from passes.place import Place
    from targets import load_target

    target = load_target(target_name)
    start = time.perf_counter()
    module = import_model(model, input_shapes, calibrate, activations, target=target)
    imported = time.perf_counter() - start
    timings = run_pipeline(module, parse_pipeline(",".join(FRONTEND)),
                           print_after_all=print_after_all)
    integer = copy.deepcopy(module)
    options = BackendOptions(target.source or target.name, pipeline, stream, replicate, placer,
                             place_time_limit, place_effort)
    backend = backend_passes(options)  # emit-asm only checks; the files are written below
    timings += run_pipeline(module, backend, print_after_all=print_after_all,
                            time_passes=time_passes)
    timings.insert(0, PassTiming("import-onnx", imported))
    placed = next((p.summary for p in backend if isinstance(p, Place)), None)
    cores = generate(module, target)
    program, image = emit(module, target, cores, output)
    if write:
        image_path = Path(output).with_suffix(".img")
        with OutputSet({"the program": output, "its image": image_path}) as out:
            out.write(output, program)
            out.write(image_path, image.to_bytes())
            out.commit()
    return Compiled(integer, module, target, cores, program, image, timings,
                    placed.as_dict() if placed is not None else {})


def compile_command(args: argparse.Namespace) -> int:
    """Check every output, compile, then stage and commit the files together: a
    failure or a signal at any step leaves no output behind."""
    import json

    from cimc.commands.opt import input_shapes
    from cimc.diagnostics import CimcError
    from cimc.outputs import OutputSet
    from targets import is_target_name

    if args.emit_data and not args.inputs:
        raise CimcError("--emit-data needs --inputs X.npy (the test inputs to quantize)")
    if args.labels and not args.emit_data:
        raise CimcError("--labels is only used with --emit-data")
    output = Path(args.output)
    image = output.with_suffix(".img")
    if output.suffix == ".img":
        raise CimcError(f"-o {output}: the crossbar image is written beside the program with "
                        "suffix .img; name the program .s")
    inputs = {"MODEL.onnx": args.model, "--calibrate": args.calibrate, "--inputs": args.inputs,
              "--labels": args.labels,
              "--target": None if is_target_name(args.target) else args.target}
    outputs = {"-o": output, "the image beside -o": image,
               "--report": args.report, "--emit-data": args.emit_data}
    with OutputSet(outputs, inputs) as out:
        compiled = compile_model(args.model, str(output), args.target,
                                 input_shapes(args.input_shape) or None,
                                 args.print_ir_after_all, args.time_passes,
                                 args.calibrate, args.activations, args.pipeline, args.stream,
                                 args.replicate, args.placer, args.place_time_limit,
                                 write=False, place_effort=args.place_effort)
        codes = _test_codes(args, compiled) if args.inputs else None
        header = _header(args, compiled, codes) if args.emit_data else None
        report = build_report(compiled, str(output), codes[0] if codes else None) \
            if args.report else None
        out.write(output, compiled.program)
        out.write(image, compiled.image.to_bytes())
        if header is not None:
            out.write(args.emit_data, header)
        if report is not None:
            out.write(args.report, json.dumps(report, indent=2, sort_keys=True) + "\n")
        out.commit()
    return 0


def _test_codes(args: argparse.Namespace, compiled: Compiled
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Quantized inputs and expected outputs (by program port) of the --inputs samples."""
    from cimc.backend_io import reference_codes
    from cimc.diagnostics import CimcError
    from cimc.tensor_io import read_inputs

    integer = compiled.integer
    feeds = read_inputs(args.inputs, {name: integer.values[name] for name in integer.inputs})
    samples = min(len(x) // integer.values[name].shape[0] for name, x in feeds.items())
    if args.count is not None:
        if args.count > samples:
            raise CimcError(f"--count {args.count}: {args.inputs} holds {samples} samples")
        feeds = {name: x[: args.count * integer.values[name].shape[0]]
                 for name, x in feeds.items()}
    return reference_codes(integer, feeds)


def _header(args: argparse.Namespace, compiled: Compiled,
            codes: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None) -> str:
    """The C data header of the quantized test inputs and expected outputs."""
    import numpy as np

    from cimc.diagnostics import CimcError
    from passes.emit_data import data_header

    assert codes is not None
    count = len(next(iter(codes[0].values())))
    labels = _load_array(args.labels) if args.labels else None
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
            raise CimcError(f"{args.labels}: labels must be a 1-D array of integers, "
                            f"not {labels.dtype} of shape {list(labels.shape)}")
        if len(labels) < count:
            raise CimcError(f"{args.labels} holds {len(labels)} labels, fewer than the inputs")
    name = args.data_name or Path(args.emit_data).stem.removesuffix("_data")
    comment = (f"{count} quantized inputs of {Path(args.model).name} and the outputs the "
               f"program for target {compiled.target.name} must produce; generated by cimc")
    return data_header(name, codes[0], codes[1], labels, comment)


def _load_array(path: str) -> np.ndarray:
    import numpy as np

    from cimc.diagnostics import CimcError

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CimcError(f"{path}: cannot read a .npy array: {exc}") from None


def build_report(compiled: Compiled, program_path: str,
                 input_codes: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """The report: static figures plus cycles/throughput/energy from one simulated inference."""
    import numpy as np

    from cimc.backend_report import program_figures
    from isa.assembler import assemble_text
    from isa.simulator import run_program

    program = assemble_text(compiled.program, program_path)
    if input_codes is not None:
        feeds = {name: codes[:1] for name, codes in input_codes.items()}
        source = "simulation of one inference on the first of --inputs"
    else:
        feeds = {d.name: np.full((1, *d.shape), d.zp, dtype=np.int64) for d in program.inputs}
        source = ("simulation of one inference on an all-zero-point input (no --inputs given); "
                  "the program has no data-dependent control flow, so every input takes "
                  "this time and nearly this energy")
    _, sim = run_program(program, compiled.image, compiled.target, feeds)
    report = program_figures(compiled.module, compiled.target, compiled.cores, program, sim)
    report.update(figures_from=source,
                  pass_seconds={t.name: round(t.seconds, 6) for t in compiled.timings})
    if compiled.placement:  # docs/placement.md: the placer, its bound and gap, time-out
        report["placement"] = compiled.placement
        report["hop_bytes_bound"] = compiled.placement["hop_bytes_bound"]
        report.setdefault("max_link_bytes", compiled.placement["max_link_bytes"])
    return report
