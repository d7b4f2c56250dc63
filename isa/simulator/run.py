"""Running a program: inputs into global memory, run the machine, outputs and report out.

Inputs and outputs are quantized codes with a leading batch axis, placed at
the addresses the program's `.input` / `.output` directives declare (shape
without batch, NHWC for 4-D tensors, row-major otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.diagnostics import CimcError
from cimc.isa.image import Image
from cimc.isa.program import IODecl, Program
from cimc.isa.simulator.crossbar import Analog
from cimc.isa.simulator.machine import Machine
from cimc.isa.simulator.memory import ELEMENT_DTYPES, MemoryFault
from cimc.isa.simulator.report import build_report
from cimc.isa.simulator.trace import Trace
from cimc.targets import Target


@dataclass(frozen=True)
class SimOptions:
    """How to simulate: crossbar what-ifs, limits, tracing."""

    adc_bits: int | None = None  # None: ideal ADC (exact integer MVMs)
    noise_sigma: float = 0.0  # cell-conductance noise, in cell levels
    seed: int = 0
    bit_level: bool = False  # model every bit step even when the ADC is ideal
    max_steps: int = 50_000_000  # instructions, all cores together
    trace: bool = False
    trace_detail: int = 2000  # instructions per core traced one by one
    trace_max_events: int = 200_000
    trace_labels: dict[int, str] | None = None  # line -> task name (trace.task_labels)
    # Run straight-line code as translated blocks (blocks.py); False interprets every
    # instruction one by one, with the same results (to check the translation).
    blocks: bool = True


@dataclass
class Simulation:
    """The result of a run."""

    outputs: dict[str, np.ndarray]
    report: dict[str, Any]
    trace: Trace | None


def check_image(image: Image, target: Target) -> None:
    """The image must fit the target's crossbars and cores (and have one phase unless the
    target's crossbars are reprogrammable)."""
    if (image.cell_bits, image.rows, image.cols) != (target.cell_bits, target.rows, target.cols):
        raise CimcError(
            f"the crossbar image is for {image.rows}x{image.cols} crossbars of "
            f"{image.cell_bits}-bit cells but target '{target.name}' has {target.rows}x"
            f"{target.cols} crossbars of {target.cell_bits}-bit cells; recompile for this target")
    if image.phases > 1 and not target.reprogrammable:
        raise CimcError(f"the crossbar image has {image.phases} phases but target "
                        f"'{target.name}' cannot rewrite its crossbars between them "
                        "(crossbar.reprogrammable = false)")
    for number, core in sorted(image.cores.items()):
        if number >= target.cores:
            raise CimcError(f"the crossbar image programs core {number} but target "
                            f"'{target.name}' has {target.cores} cores")
        if core.cells.shape[0] > target.crossbars_per_core:
            raise CimcError(f"the crossbar image gives core {number} {core.cells.shape[0]} "
                            f"crossbars but target '{target.name}' has "
                            f"{target.crossbars_per_core} per core")


def _batch(program: Program, inputs: dict[str, np.ndarray]) -> int:
    declared = [d.name for d in program.inputs]
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise CimcError(f"input '{unknown[0]}' is not declared by the program "
                        f"(its inputs: {', '.join(declared) or 'none'})")
    missing = [name for name in declared if name not in inputs]
    if missing:
        raise CimcError(f"no data for input '{missing[0]}' (the program declares "
                        f"{', '.join(declared)})")
    decls = {d.name: d for d in program.inputs}
    sizes = {_samples(decls[name], np.asarray(inputs[name])) for name in declared}
    if len(sizes) > 1:
        raise CimcError(f"inputs have different batch sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _samples(decl: IODecl, codes: np.ndarray) -> int:
    """How many samples `codes` hold: [batch, *shape], or whole samples stacked another
    way with the same innermost axis (a time-major sequence [T, 1, D] is one sample
    [T·1, D] of the same bytes to the program: [S·T, 1, D] holds S)."""
    if codes.ndim == 0:
        return 0
    if codes.shape[1:] == decl.shape:
        return codes.shape[0]
    if decl.size and decl.shape and codes.size % decl.size == 0 \
            and codes.shape[-1] == decl.shape[-1]:
        return codes.size // decl.size
    raise CimcError(f"input '{decl.name}' has shape {codes.shape[1:]} (after the batch axis) "
                    f"but the program declares {decl.shape}")


def _write_input(machine: Machine, decl: IODecl, codes: np.ndarray) -> None:
    codes = np.asarray(codes)
    codes = codes.reshape(_samples(decl, codes), *decl.shape)
    if not np.issubdtype(codes.dtype, np.integer):
        raise CimcError(f"input '{decl.name}' must be integer codes, got {codes.dtype}")
    dtype = ELEMENT_DTYPES[decl.dtype]
    info = np.iinfo(dtype)
    if codes.size and (codes.min() < info.min or codes.max() > info.max):
        raise CimcError(f"input '{decl.name}' holds values outside {decl.dtype} "
                        f"[{info.min}, {info.max}]")
    flat = codes.reshape(codes.shape[0], -1).astype(dtype)
    try:
        machine.global_memory.store(decl.addr, flat, decl.dtype)
    except MemoryFault as exc:
        raise CimcError(f"input '{decl.name}': {exc}") from None


def simulate(program: Program, image: Image | None, target: Target,
             inputs: dict[str, np.ndarray], options: SimOptions | None = None) -> Simulation:
    """Run `program` on a batch of quantized `inputs` (name -> codes [batch, *shape])."""
    options = options or SimOptions()
    if image is not None:
        check_image(image, target)
    batch = _batch(program, inputs)
    trace = None
    if options.trace:
        streams = {n: [*s.instructions] for n, s in program.streams.items()}
        trace = Trace(streams, target.clock_mhz, options.trace_detail, options.trace_max_events,
                      options.trace_labels)
    analog = Analog(options.adc_bits, options.noise_sigma, options.seed)
    machine = Machine(program, image, target, batch, analog, options.bit_level,
                      options.max_steps, trace, options.blocks)
    if trace is not None:  # the machine appends an implicit halt to each stream
        trace.streams = {n: core.instructions for n, core in machine.cores.items()}
    for decl in program.inputs:
        _write_input(machine, decl, inputs[decl.name])
    machine.run()
    outputs = {}
    for decl in program.outputs:
        try:
            codes = machine.global_memory.load(decl.addr, decl.size, decl.dtype)
        except MemoryFault as exc:
            raise CimcError(f"output '{decl.name}': {exc}") from None
        outputs[decl.name] = codes.reshape(batch, *decl.shape).copy()
    report = build_report(machine)
    report["options"] = {"adc_bits": options.adc_bits, "noise_sigma": options.noise_sigma,
                         "seed": options.seed, "bit_level": options.bit_level}
    return Simulation(outputs, report, trace)


def run_program(program: Program, image: Image | None, target: Target,
                inputs: dict[str, np.ndarray],
                options: SimOptions | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run on quantized input codes; (output codes by name, report)."""
    result = simulate(program, image, target, inputs, options)
    return result.outputs, result.report


def quantize_input(decl: IODecl, values: np.ndarray) -> np.ndarray:
    """Float values -> codes by the declaration's scale and zero point (round half to even)."""
    info = np.iinfo(ELEMENT_DTYPES[decl.dtype])
    codes = np.rint(np.asarray(values, dtype=np.float64) / decl.scale) + decl.zp
    return np.clip(codes, info.min, info.max).astype(ELEMENT_DTYPES[decl.dtype])


def dequantize_output(decl: IODecl, codes: np.ndarray) -> np.ndarray:
    """Codes -> float32 real values: scale * (q - zp)."""
    return (decl.scale * (codes.astype(np.float64) - decl.zp)).astype(np.float32)


def run_float(program: Program, image: Image | None, target: Target,
              inputs: dict[str, np.ndarray],
              options: SimOptions | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run on float inputs (quantized by `.input`); float32 outputs (dequantized by `.output`)."""
    declared = {d.name: d for d in program.inputs}
    codes = {name: quantize_input(declared[name], value) if name in declared else value
             for name, value in inputs.items()}
    outputs, report = run_program(program, image, target, codes, options)
    by_name = {d.name: d for d in program.outputs}
    return {name: dequantize_output(by_name[name], q) for name, q in outputs.items()}, report
