"""`cimc sweep MODEL.onnx --inputs X --labels Y.npy --adc-bits 4..9 --noise 0,0.02`: a
model's accuracy on a labelled test set over a grid of settings (cimc.sweep).

The test set is given as `cimc run` and `cimc compile --emit-data` take it: inputs
in an .npy (single-input model) or .npz (by input name), samples on axis 0, and
their labels in an .npy of integers. The points run as Ray tasks on a local Ray
instance (started and stopped here), on a cluster with `--ray-address`, or in this
process with `--serial`; all three give the same numbers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from cimc.sweep import SweepResult

# Points and plots printed and drawn; the CSV and JSON hold every figure.
TABLE = (("target", "target"), ("cell_bits", "cell"), ("dac_bits", "dac"), ("adc_bits", "adc"),
         ("noise", "sigma"), ("accuracy", "accuracy"), ("agreement", "agreement"),
         ("cycles", "cycles"), ("energy_nj", "energy nJ"), ("crossbars", "crossbars"))


def whole_list(low: int, high: int, ideal: bool = False) -> Callable[[str], list[int | None]]:
    """Whole numbers in low..high, comma-separated, with ranges A..B (and `ideal`)."""
    from cimc.cli.numbers import whole

    one = whole(low, high)
    wanted = f"whole numbers from {low} to {high}" + (" or 'ideal'" if ideal else "")

    def parse(text: str) -> list[int | None]:
        values: list[int | None] = []
        for item in text.split(","):
            item = item.strip()
            if ideal and item == "ideal":
                values.append(None)
            elif ".." in item:
                first, _, last = item.partition("..")
                start, stop = one(first), one(last)
                if start > stop:
                    raise argparse.ArgumentTypeError(f"range {item} is empty; give A..B with "
                                                     f"A <= B, {wanted}")
                values.extend(range(start, stop + 1))
            else:
                try:
                    values.append(one(item))
                except argparse.ArgumentTypeError:
                    raise argparse.ArgumentTypeError(
                        f"'{item}' is not one of the {wanted}; give a list such as 4,6,8 "
                        "or a range such as 4..9") from None
        return list(dict.fromkeys(values))

    parse.__name__ = "list"
    return parse


def real_list(low: float, high: float) -> Callable[[str], list[float]]:
    """Finite numbers in low..high, comma-separated."""
    from cimc.cli.numbers import real

    one = real(low, high)

    def parse(text: str) -> list[float]:
        try:
            return list(dict.fromkeys(one(item.strip()) for item in text.split(",")))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (a comma-separated list such as "
                                             "0,0.01,0.02)") from None

    parse.__name__ = "list"
    return parse


def name_list(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}' has an empty name; give names or target "
                                         "files separated by commas, e.g. isaac,puma")
    return list(dict.fromkeys(names))


def register(subparsers: argparse._SubParsersAction) -> None:
    from cimc.cli.compile import add_backend_options
    from cimc.cli.numbers import whole
    from cimc.options import ACTIVATIONS
    from cimc.sweep import SHARD_SIZE

    parser = subparsers.add_parser(
        "sweep", help="accuracy, cycles and energy over a grid of ADC bits, noise, targets...",
        description="Run MODEL.onnx on a labelled test set at every point of a grid of "
        "settings (targets, cell bits, DAC bits: each compiled once; ADC bits and cell noise: "
        "simulator what-ifs) and report each point's accuracy, agreement with the exact "
        "result, cycles, energy per inference and crossbars. Points run as Ray tasks "
        "(pip install 'cimc[sweep]') unless --serial.",
        epilog="Lists are comma-separated; whole numbers also take ranges: --adc-bits 4..9, "
        "--adc-bits ideal,4,6,8, --noise 0,0.01,0.02,0.05, --target isaac,puma.")
    parser.add_argument("model", metavar="MODEL.onnx", help="float or QDQ-quantized ONNX model")
    parser.add_argument("--inputs", required=True, metavar="X",
                        help="test inputs: .npy (single-input model) or .npz keyed by input "
                        "name, samples on axis 0 (as cimc run takes them)")
    parser.add_argument("--labels", required=True, metavar="Y.npy",
                        help="the inputs' labels: a 1-D .npy of integers (classes)")
    parser.add_argument("--count", type=whole(1), metavar="N",
                        help="use the first N samples only")
    parser.add_argument("--target", type=name_list, default=["isaac"], metavar="NAMES|FILES",
                        help="targets to compile for (default: isaac)")
    parser.add_argument("--cell-bits", type=whole_list(1, 8), default=[None], metavar="LIST",
                        help="bits per crossbar cell (weight slicing; default: each target's)")
    parser.add_argument("--dac-bits", type=whole_list(1, 8), default=[None], metavar="LIST",
                        help="input bits per DAC step (default: each target's)")
    parser.add_argument("--adc-bits", type=whole_list(1, 32, ideal=True), default=[None],
                        metavar="LIST", help="what-if: ADC bits per conversion ('ideal': "
                        "unclipped; default ideal)")
    parser.add_argument("--noise", type=real_list(0, 1000), default=[0.0], metavar="LIST",
                        help="what-if: Gaussian cell noise sigmas, in cell levels (default 0)")
    parser.add_argument("--seed", type=whole(0, 2**63 - 1), default=0,
                        help="seed of the cell noise: one device draw per point (default 0)")
    parser.add_argument("-o", "--output", metavar="SWEEP.csv",
                        help="write the points as CSV")
    parser.add_argument("--json", metavar="SWEEP.json",
                        help="write the points and each setting's exact run as JSON")
    parser.add_argument("--plots", metavar="DIR",
                        help="draw accuracy and agreement vs ADC bits, one line per sigma, "
                        "into DIR/accuracy.png and .svg")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--serial", action="store_true",
                       help="run every point in this process, without Ray")
    where.add_argument("--ray-address", metavar="ADDR",
                       help="run on this Ray cluster (e.g. ray://head:10001 or auto; cimc "
                       "must be installed on its workers) instead of a local instance")
    parser.add_argument("--workers", type=whole(1, 1024), default=2, metavar="N",
                        help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--shard-size", type=whole(1), default=SHARD_SIZE, metavar="N",
                        help=f"test samples per task (default {SHARD_SIZE})")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="pin an input's dynamic shape, e.g. input=1,3,224,224 "
                        "(repeatable)")
    parser.add_argument("--calibrate", metavar="DATA",
                        help="quantize a float model first, with ranges from these inputs")
    parser.add_argument("--activations", choices=ACTIVATIONS, default="int8",
                        help="activation type when a float model is quantized (default int8)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line on a terminal (warnings and errors still show)")
    add_backend_options(parser)
    parser.set_defaults(func=sweep_command)


def sweep_command(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cimc.api import prepare
    from cimc.cli.opt import input_shapes
    from cimc.diagnostics import CimcError, end_progress, progress
    from cimc.emit.plots import SWEEP_PLOTS, sweep_plots
    from cimc.outputs import OutputSet
    from cimc.sweep import Grid, LabelledSet, ray_runner, run_sweep, target_variant
    from cimc.targets import is_target_name
    from cimc.tensor_io import read_inputs

    if args.ray_address is not None and not args.ray_address.strip():
        raise CimcError("--ray-address is empty; give the cluster's address (e.g. "
                        "ray://head:10001 or auto), or leave it out for a local instance")
    plots = {f"--plots {name}": Path(args.plots) / name for name in SWEEP_PLOTS} \
        if args.plots else {}
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise CimcError(f"--plots {args.plots}: not a directory; give a directory for the "
                        "pictures")
    outputs = {"-o": args.output, "--json": args.json, **plots}
    inputs = {"MODEL.onnx": args.model, "--inputs": args.inputs, "--labels": args.labels,
              "--calibrate": args.calibrate,
              **{f"--target {t}": t for t in args.target if not is_target_name(t)}}
    grid = Grid(tuple(args.target), tuple(args.cell_bits), tuple(args.dac_bits),
                tuple(args.adc_bits), tuple(args.noise))
    options = {"pipeline": args.pipeline, "stream": args.stream, "replicate": args.replicate,
               "placer": args.placer, "place_effort": args.place_effort,
               "place_time_limit": args.place_time_limit}
    with OutputSet(outputs, inputs) as out:
        for setting in grid.settings():  # a bad target or variant before any work
            target_variant(*setting)
        progress(f"import {Path(args.model).name}")
        module = prepare(args.model, input_shapes(args.input_shape), args.calibrate,
                         args.activations)
        types = {name: module.values[name] for name in module.inputs}
        feeds = read_inputs(args.inputs, types)
        labels = _labels(args.labels)
        batch = {name: ty.shape[0] if ty.shape else 1 for name, ty in types.items()}
        samples = min(len(x) // batch[name] for name, x in feeds.items())
        count = samples if args.count is None else args.count
        if count > samples:
            raise CimcError(f"--count {args.count}: {args.inputs} holds {samples} samples")
        if len(labels) < count:
            raise CimcError(f"{args.labels} holds {len(labels)} labels but {count} samples are "
                            "used; give a label for every sample (or --count)")
        test = LabelledSet({name: x[: count * batch[name]] for name, x in feeds.items()},
                       labels[:count])
        points = len(grid.settings()) * len(grid.what_ifs())
        progress(f"sweep: {points} point{'s' if points > 1 else ''} x {count} samples"
                 + (" (serial)" if args.serial else " (starting Ray)"))
        run = {"options": options, "seed": args.seed, "shard_size": args.shard_size,
               "model": Path(args.model).name}
        if args.serial:
            result = run_sweep(module, test, grid, **run)
        else:
            with ray_runner(args.ray_address, args.workers) as runner:
                result = run_sweep(module, test, grid, runner=runner, **run)
        if args.output:
            out.write(args.output, result.csv())
        if args.json:
            out.write(args.json, json.dumps(result.as_dict(), indent=2) + "\n")
        if args.plots:
            for name, content in sweep_plots(result.as_dict()).items():
                out.write(Path(args.plots) / name, content)
        out.commit()
    end_progress()
    print(_table(result))
    return 0


def _labels(path: str) -> np.ndarray:
    import numpy as np

    from cimc.diagnostics import CimcError

    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CimcError(f"{path}: cannot read a .npy array of labels: {exc}") from None
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 \
            or not np.issubdtype(labels.dtype, np.integer):
        shape = list(getattr(labels, "shape", []))
        raise CimcError(f"{path}: labels must be a 1-D .npy array of integers, not "
                        f"{getattr(labels, 'dtype', 'an archive')} of shape {shape}")
    return labels


def _table(result: SweepResult) -> str:
    """The exact runs and the points as text tables."""
    lines = [f"{result.model}: {result.samples} samples, noise seed {result.seed}"]
    for exact in result.exact:
        lines.append(f"exact on {exact['target']} ({exact['cell_bits']}-bit cells, "
                     f"{exact['dac_bits']}-bit DAC): accuracy {exact['accuracy']:.4f}, "
                     f"{exact['cycles']} cycles, {exact['energy_nj']:.1f} nJ per inference, "
                     f"{exact['crossbars']} crossbars")
    rows = [[title for _, title in TABLE]]
    for point in result.points:
        rows.append([_cell(key, point[key]) for key, _ in TABLE])
    widths = [max(len(row[k]) for row in rows) for k in range(len(TABLE))]
    for row in rows:
        lines.append("  ".join(text.rjust(width) if k else text.ljust(width)
                               for k, (text, width) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "ideal"
    if key in ("accuracy", "agreement"):
        return f"{value:.4f}"
    if key == "energy_nj":
        return f"{value:.1f}"
    return str(value)
