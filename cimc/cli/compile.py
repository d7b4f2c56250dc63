"""`cimc MODEL.onnx -o prog.s`: compile an ONNX model (QDQ, or float quantized first)
for a CIM target.

Runs import-onnx, the frontend pipeline and the backend pipeline
(cimc/pipeline.py), writing prog.s and its crossbar image prog.img beside
it; optionally the C data header of test inputs and expected outputs
(`--emit-data`) and a JSON report (`--report`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from cimc.api import Program


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """The flags that choose how the backend maps the model (shared with `cimc run`)."""
    from cimc.cli.numbers import whole, within
    from cimc.options import PLACE_EFFORT, PLACE_TIME_LIMIT, REPLICATE

    parser.add_argument("--pipeline", choices=("latency", "throughput"), default="latency",
                        help="latency: one inference, layers start as soon as their input rows "
                        "exist; throughput: --stream inferences flow through the pipeline")
    parser.add_argument("--stream", type=whole(1), default=0, metavar="N",
                        help="inferences per run in throughput mode (default 4)")
    parser.add_argument("--replicate", type=within(REPLICATE), default=None, metavar="BUDGET",
                        help="copy slow layers' weights within BUDGET (0..1) x the target's "
                        "crossbars (e.g. 0.9; 0 = off, the default)")
    parser.add_argument("--placer", choices=("cpsat", "anneal", "sequential", "snake"),
                        default="cpsat", help="how place assigns blocks to cores "
                        "(docs/placement.md; default cpsat)")
    parser.add_argument("--place-effort", type=within(PLACE_EFFORT), default=None, metavar="E",
                        help="work of the cpsat and anneal placers, counted in moves and "
                        "solver steps, never in seconds, so the program is the same on any "
                        "machine (default 1; 0.1 is quick; at most 100)")
    parser.add_argument("--place-time-limit", type=within(PLACE_TIME_LIMIT), default=None,
                        metavar="SECONDS",
                        help="wall-clock safety net of the placers (default none, at most a "
                        "day); if it stops the search, a warning says the program depends on "
                        "the machine")
    parser.add_argument("--partition", choices=("optimal", "greedy"), default="optimal",
                        help="a model larger than the chip runs in phases, the crossbars "
                        "reprogrammed between them: optimal (default) minimises the time of a "
                        "batch, greedy fills each phase in order (docs/backend.md)")
    parser.add_argument("--batch", type=whole(1, 65536), default=1, metavar="B",
                        help="images one run of a model in phases computes, phase by phase: "
                        "reprogramming is paid once per phase per batch (default 1)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from cimc.cli.numbers import whole
    from cimc.options import ACTIVATIONS

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
    parser.add_argument("--activations", choices=ACTIVATIONS, default="int8",
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
                        "report's simulation with --simulate)")
    parser.add_argument("--count", type=whole(1), metavar="N",
                        help="use the first N inputs only")
    parser.add_argument("--labels", metavar="Y.npy", help="labels of the inputs, for the header")
    parser.add_argument("--data-name", metavar="NAME",
                        help="prefix of the header's names (default: from the header file name)")
    parser.add_argument("--report", metavar="R.json", help="write the compile report (JSON)")
    parser.add_argument("--plots", metavar="DIR",
                        help="draw the report as cimc plot does: mesh, links and layers "
                        "(.png and .svg) in DIR")
    parser.add_argument("--simulate", action="store_true",
                        help="the report's cycles, throughput and energy from simulating one "
                        "inference (on the first of --inputs) instead of the timing model")
    add_backend_options(parser)
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="pin an ONNX input's shape, e.g. data=1,3,32,32 (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line on a terminal (warnings and errors still show)")
    parser.add_argument("--time-passes", action="store_true",
                        help="print to stderr a table of where the command's time went: "
                        "start-up, import, every pass, emission, report, writing")
    parser.add_argument("--print-ir-after-all", action="store_true",
                        help="print the IR to stderr after every pass")
    parser.set_defaults(func=compile_command)


def compile_command(args: argparse.Namespace) -> int:
    """Check every output, compile, then stage and commit the files together: a
    failure or a signal at any step leaves no output behind."""
    import json
    import sys
    import time

    from cimc.api import compile as compile_program
    from cimc.cli.opt import input_shapes
    from cimc.diagnostics import CimcError, end_progress, progress
    from cimc.outputs import OutputSet
    from cimc.pass_manager import PassTiming, timing_report
    from cimc.targets import is_target_name

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
    from cimc.emit.plots import FORMATS, REPORT_PLOTS

    plots = {f"--plots {name}.{form}": Path(args.plots) / f"{name}.{form}"
             for name in REPORT_PLOTS for form in FORMATS} if args.plots else {}
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise CimcError(f"--plots {args.plots}: not a directory; give a directory for the "
                        "pictures")
    outputs = {"-o": output, "the image beside -o": image,
               "--report": args.report, "--emit-data": args.emit_data, **plots}
    entered = time.perf_counter()
    started = getattr(args, "started", entered)  # main's start
    startup = getattr(args, "startup", None)
    stages = [PassTiming("command line", entered - started)]

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        stages.append(PassTiming(name, now - since))
        return now

    with OutputSet(outputs, inputs) as out:
        compiled = compile_program(
            args.model, args.target, input_shapes=input_shapes(args.input_shape) or None,
            calibrate=args.calibrate, activations=args.activations, pipeline=args.pipeline,
            stream=args.stream, replicate=args.replicate, placer=args.placer,
            place_effort=args.place_effort, place_time_limit=args.place_time_limit,
            partition=args.partition, batch=args.batch,
            path=str(output), print_ir_after_all=args.print_ir_after_all)
        mark = time.perf_counter()
        if args.inputs:
            progress("test data (reference interpreter)")
        codes = _test_codes(args, compiled) if args.inputs else None
        header = _header(args, compiled, codes) if args.emit_data else None
        if args.inputs:
            mark = stage("test data (reference)", mark)
        wanted = bool(args.report or args.plots)
        if wanted:
            progress("report (simulating)" if args.simulate else "report")
        report = build_report(compiled, str(output), codes[0] if codes else None,
                              args.simulate) if wanted else None
        if wanted:
            mark = stage("report (simulation)" if args.simulate else "report", mark)
        if args.plots:
            from cimc.emit.plots import report_plots

            assert report is not None
            progress("plots")
            pictures = report_plots(report, compiled.target)
            mark = stage("plots", mark)
        progress("writing")
        out.write(output, compiled.assembly)
        out.write(image, compiled.image.to_bytes())
        if header is not None:
            out.write(args.emit_data, header)
        if args.report and report is not None:
            out.write(args.report, json.dumps(report, indent=2, sort_keys=True) + "\n")
        if args.plots:
            for name, content in pictures.items():
                out.write(Path(args.plots) / name, content)
        out.commit()
        stage("write files", mark)
    end_progress()
    if args.time_passes:
        # The whole command: Python's start, reading the command line (loading the
        # commands' modules), import (and quantization), every pass, emission, what the
        # options add, and the rest as (other); only the interpreter's exit after this
        # table is left out.
        listed = [stages[0], *compiled.timings, *stages[1:]]
        accounted = sum(t.seconds for t in listed) + compiled.verify_seconds
        wall = time.perf_counter() - started
        listed.append(PassTiming("(other)", max(wall - accounted, 0.0)))
        if startup is not None:
            listed.insert(0, PassTiming("(startup)", startup))
        sys.stderr.write(timing_report(listed, compiled.verify_seconds))
        sys.stderr.flush()
    return 0


def _test_codes(args: argparse.Namespace, compiled: Program
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Quantized inputs and expected outputs (by program port) of the --inputs samples."""
    from cimc.diagnostics import CimcError
    from cimc.host.ports import reference_codes
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


def _header(args: argparse.Namespace, compiled: Program,
            codes: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None) -> str:
    """The C data header of the quantized test inputs and expected outputs."""
    import numpy as np

    from cimc.diagnostics import CimcError
    from cimc.emit.data_header import data_header

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
    from cimc.dialect.host import ports

    quant = {}
    for port in [p for group in ports(compiled.integer) for p in group]:
        q = compiled.integer.values[port.value].quant
        if q is not None and not q.per_channel:
            quant[port.name] = (float(q.scale_array()[0]), int(q.zero_point_array()[0]))
    return data_header(name, codes[0], codes[1], labels, comment, quant)


def _load_array(path: str) -> np.ndarray:
    import numpy as np

    from cimc.diagnostics import CimcError

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CimcError(f"{path}: cannot read a .npy array: {exc}") from None


def build_report(compiled: Program, program_path: str,
                 input_codes: dict[str, np.ndarray] | None,
                 simulate: bool = False) -> dict[str, Any]:
    """The report (cimc.api.program_report) of the program compiled for `program_path`."""
    import dataclasses

    from cimc.api import program_report

    if program_path != compiled.path:
        compiled = dataclasses.replace(compiled, assembly=compiled.text_for(program_path),
                                       path=program_path)
    return program_report(compiled, input_codes, simulate)
