"""`cimc sim prog.s|prog.bin --inputs X --outputs Y`: run a program on the simulator.

Inputs: X is an .npy (the program's only input) or an .npz (arrays named like
the `.input` directives), batch on axis 0. Float arrays are real values,
quantized by the input's scale and zero point; integer arrays are taken as
the quantized codes themselves. An array without the batch axis (exactly
the declared shape) is a batch of one; for an image input declared
[H, W, C] an array laid out [batch, C, H, W] (ONNX's NCHW) is transposed;
axes of size 1 may be missing or extra (a [batch, 28, 28] array feeds
[28, 28, 1]).

Outputs: Y is an .npy (one output) or .npz (by name), float32 real values
dequantized by the `.output` scale and zero point (`--codes`: the integer
codes), in the declared layout. The crossbar image is the program's `.image`
file, and a target file named by `.target` (a path, not a bundled name) is
found, relative to the program file. The output files appear together or not
at all.
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    from cimc.cli.numbers import real, whole

    parser = subparsers.add_parser(
        "sim", help="run a program on the simulator (outputs, cycles, energy)",
        description="Run an assembled program (text or binary) on the cimc simulator.")
    parser.add_argument("program", metavar="PROG", help="program: assembly text or binary")
    parser.add_argument("--inputs", metavar="X", help=".npy (one input) or .npz (by name)")
    parser.add_argument("--outputs", metavar="Y", help=".npy (one output) or .npz to write")
    parser.add_argument("--codes", action="store_true",
                        help="write the outputs' integer codes instead of dequantized floats")
    parser.add_argument("--report", metavar="R.json", help="write the report (cycles, energy...)")
    parser.add_argument("--trace", metavar="T.json",
                        help="write a Chrome trace-event timeline (opens in Perfetto)")
    parser.add_argument("--plots", metavar="DIR",
                        help="draw the run as a Gantt chart, a row per core coloured by layer "
                        "(DIR/pipeline.png and .svg)")
    parser.add_argument("--target", metavar="NAME|FILE",
                        help="target (default: the program's .target: a bundled name, or a "
                        "target file relative to the program)")
    parser.add_argument("--adc-bits", type=whole(1, 32), metavar="N",
                        help="what-if: clip each ADC conversion to N bits (default: ideal)")
    parser.add_argument("--noise", type=real(0, 1000), default=0.0, metavar="SIGMA",
                        help="what-if: Gaussian cell noise, in cell levels (0..1000)")
    parser.add_argument("--seed", type=whole(0, 2**63 - 1), default=0,
                        help="seed of the cell noise (>= 0)")
    parser.add_argument("--max-steps", type=whole(1), default=50_000_000, metavar="N",
                        help="stop after N instructions (runaway loops)")
    parser.set_defaults(func=sim_command)


def sim_command(args: argparse.Namespace) -> int:
    from cimc.diagnostics import CimcError
    from cimc.isa.assembler import load_program
    from cimc.isa.image import load_image
    from cimc.isa.simulator import SimOptions, dequantize_output, simulate
    from cimc.outputs import OutputSet
    from cimc.targets import is_target_name, load_target, program_target

    if args.outputs and not args.outputs.endswith((".npy", ".npz")):
        raise CimcError(f"{args.outputs}: outputs are written to an .npy or .npz file")
    program = load_program(args.program)
    image_path = None
    if program.image is not None:
        image_path = Path(args.program).parent / program.image
        if not image_path.is_file():
            raise CimcError(f"crossbar image {image_path} (from the .image directive of "
                            f"{args.program}) not found; compile again or fix the path")
    target_file = None
    if args.target:
        target_file = None if is_target_name(args.target) else args.target
    elif program.target and not is_target_name(program.target):
        target_file = Path(args.program).parent / program.target
    inputs = {"PROG": args.program, "its image": image_path, "--inputs": args.inputs,
              "the target file": target_file}
    from cimc.emit.plots import PIPELINE_PLOTS

    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise CimcError(f"--plots {args.plots}: not a directory; give a directory for the "
                        "pictures")
    outputs = {"--outputs": args.outputs, "--report": args.report, "--trace": args.trace,
               **{f"--plots {name}": Path(args.plots) / name
                  for name in (PIPELINE_PLOTS if args.plots else ())}}
    traced = bool(args.trace or args.plots)
    with OutputSet(outputs, inputs) as out:
        if args.target:
            target = load_target(args.target)
        elif program.target:
            target = program_target(program.target, args.program)
        else:
            raise CimcError(f"{args.program} has no .target directive; give --target NAME|FILE")
        image = load_image(image_path) if image_path is not None else None
        codes = read_inputs(args.inputs, program) if args.inputs else {}
        if args.adc_bits is not None:
            warn_inexact_adc(args.adc_bits, target)
        labels = _task_labels(args.program) if traced else None
        options = SimOptions(adc_bits=args.adc_bits, noise_sigma=args.noise, seed=args.seed,
                             max_steps=args.max_steps, trace=traced, trace_labels=labels)
        result = simulate(program, image, target, codes, options)
        if args.outputs:
            decls = {d.name: d for d in program.outputs}
            arrays = {name: values if args.codes else dequantize_output(decls[name], values)
                      for name, values in result.outputs.items()}
            out.write(args.outputs, encode_arrays(args.outputs, arrays))
        if args.report:
            out.write(args.report, json.dumps(result.report, indent=2) + "\n")
        document = result.trace.to_json() if result.trace is not None else None
        if args.trace and document is not None:
            out.write(args.trace, document)
        if args.plots and document is not None:
            from cimc.emit.plots import pipeline_plots

            title = f"{Path(args.program).name} on {target.name}: {result.report['cycles']} cycles"
            for name, content in pipeline_plots(json.loads(document), title).items():
                out.write(Path(args.plots) / name, content)
        out.commit()
    report = result.report
    print(f"{report['cycles']} cycles ({report['latency_us']:.3f} us at {target.clock_mhz:g} "
          f"MHz), {report['energy_nj']['total']:.3f} nJ, {report['mvm_instructions']} MVMs, "
          f"{report['instructions']} instructions, batch {report['batch']}")
    return 0


def read_inputs(path: str, program: Any) -> dict[str, np.ndarray]:
    """Input codes by name from an .npy/.npz file (see the module docstring)."""
    from cimc.diagnostics import CimcError
    from cimc.isa.simulator import quantize_input
    from cimc.tensor_io import load_arrays

    declared = {d.name: d for d in program.inputs}
    loaded = load_arrays(path)
    if isinstance(loaded, np.ndarray):
        if len(declared) != 1:
            names = ", ".join(declared) or "none"
            raise CimcError(f"{path} holds one array but the program declares inputs: {names}; "
                            f"give an .npz with one array per input name")
        arrays = {next(iter(declared)): loaded}
    else:
        arrays = loaded
        unknown = sorted(set(arrays) - set(declared))
        if unknown:
            raise CimcError(f"{path}: array '{unknown[0]}' is not an input of the program "
                            f"(its inputs: {', '.join(declared) or 'none'})")
    codes = {}
    for name, array in arrays.items():
        decl = declared[name]
        shape = tuple(decl.shape)
        if array.shape == shape:
            array = array[None]
        elif len(shape) == 3 and array.shape[1:] == (shape[2], shape[0], shape[1]):
            array = array.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        elif array.ndim and _squeezed(array.shape[1:]) == _squeezed(shape):
            array = array.reshape(array.shape[0], *shape)  # only size-1 axes differ
        if array.shape[1:] == shape and not len(array):
            raise CimcError(f"{path}: input '{name}' holds no samples (a batch of 0)")
        if array.shape[1:] != shape:
            raise CimcError(f"{path}: input '{name}' has shape {list(array.shape)} but the "
                            f"program declares [batch, {', '.join(map(str, shape))}]")
        if np.issubdtype(array.dtype, np.integer):
            codes[name] = array
        elif np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                raise CimcError(f"{path}: input '{name}' holds NaN or infinite values; "
                                "give finite numbers")
            codes[name] = quantize_input(decl, array)
        else:
            raise CimcError(f"{path}: input '{name}' has dtype {array.dtype}; give floats or "
                            f"integer codes")
    if len({len(array) for array in codes.values()}) > 1:
        held = ", ".join(f"'{name}' {len(array)}" for name, array in codes.items())
        raise CimcError(f"{path}: the inputs hold different numbers of samples ({held}); give "
                        "every input the same number")
    return codes


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def encode_arrays(path: str, arrays: dict[str, np.ndarray]) -> bytes:
    """.npy bytes of the only array, or deterministic .npz bytes (fixed zip timestamps)."""
    from cimc.diagnostics import CimcError

    if path.endswith(".npy"):
        if len(arrays) != 1:
            raise CimcError(f"{path}: the program has {len(arrays)} outputs "
                            f"({', '.join(arrays)}); write them to an .npz")
        buffer = io.BytesIO()
        np.save(buffer, next(iter(arrays.values())), allow_pickle=False)
        return buffer.getvalue()
    if not path.endswith(".npz"):
        raise CimcError(f"{path}: outputs are written to an .npy or .npz file")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                        buffer.getvalue())
    return archive.getvalue()


def warn_inexact_adc(adc_bits: int, target: Any) -> None:
    """A warning when an ADC of `adc_bits` can clip a partial sum on `target`."""
    from cimc.diagnostics import warn
    from cimc.targets import exact_adc_bits

    needed, largest = exact_adc_bits(target)
    if adc_bits < needed:
        warn(f"--adc-bits {adc_bits} is below the {needed} bits an exact partial sum needs on "
             f"target {target.name!r} (up to {largest}): conversions that exceed "
             f"{2**adc_bits - 1} clip, so results may differ from the exact model")


def _task_labels(path: str) -> dict[int, str] | None:
    """The task comments of a program text (None for a binary program: no comments)."""
    from cimc.isa.simulator.trace import task_labels

    try:
        return task_labels(Path(path).read_text())
    except (OSError, UnicodeDecodeError):
        return None
