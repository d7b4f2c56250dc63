"""The Python API: compile a model for a target, simulate the program, run the reference.

    import cimc
    program = cimc.compile("model.onnx", target="isaac")
    logits = program.simulate(images).outputs["logits"]

The command line (`cimc compile`, `cimc run`) is a thin layer over these
functions; docs/api.md describes them with examples that run as tests. Heavy
dependencies (onnx, onnxruntime, ortools) are imported when a function needs
them, so `import cimc` stays cheap.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import numpy as np

    from cimc.codegen.generate import CoreCode
    from cimc.ir.module import Module
    from cimc.isa.image import Image
    from cimc.isa.program import Program as IsaProgram
    from cimc.pass_manager import PassTiming
    from cimc.pipeline import BackendOptions
    from cimc.targets import Target

    # Calibration inputs of a float model: a .npy/.npz file, or arrays (one, or by name).
    Calibration: TypeAlias = "str | Path | np.ndarray | dict[str, np.ndarray] | None"


def import_onnx(path: str | Path,
                input_shapes: dict[str, tuple[int, ...]] | None = None) -> Module:
    """The ONNX model at `path` as a tensor IR Module, checked, shape-inferred and verified
    (`input_shapes` pins dynamic input dimensions by input name)."""
    from cimc.frontend.importer import import_onnx as load

    return load(str(path), input_shapes)


def load_target(name_or_file: str | Path | Target) -> Target:
    """A bundled target by name (isaac, puma, pimcomp, edge, tiny) or a target .toml file
    (a Target, such as a variant from `dataclasses.replace`, is returned as it is)."""
    from cimc.targets import Target
    from cimc.targets import load_target as load

    if isinstance(name_or_file, Target):
        return name_or_file
    return load(str(name_or_file))


def prepare(model: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None,
            calibrate: Calibration = None, activations: str = "int8", *,
            keep_float: bool = False, target: str | Path | None = None) -> Module:
    """`model` imported and through the frontend passes (canonicalize, fold-qdq): the
    integer IR its program computes. A float model is quantized first (with ranges from
    the `calibrate` inputs: a .npy/.npz file or arrays as `simulate` takes them; else
    random ones with a warning) unless `keep_float`.
    Given a `target`, a model whose weights cannot fit its crossbars is refused right
    after reading, before any quantization."""
    from cimc.frontend.quantize import import_model
    from cimc.pass_manager import parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND

    module = import_model(str(model), input_shapes, calibrate, activations,
                          keep_float=keep_float,
                          target=load_target(target) if target is not None else None)
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    return module


@dataclass
class Simulation:
    """What one simulated run of a program gives: the model's outputs (by output name,
    float for dequantized outputs) and the figures of the run (cycles, energy_nj, ...:
    the keys of docs/backend.md's report, per inference)."""

    outputs: dict[str, np.ndarray]
    figures: dict[str, Any]


@dataclass(repr=False)
class Program:
    """A model compiled for a target: the assembly text, the crossbar image, the IR."""

    integer: Module  # after the frontend: what the reference interpreter runs
    module: Module  # after the backend: placed and scheduled
    target: Target
    cores: dict[int, CoreCode]  # each used core's data and instructions
    assembly: str  # the program text, as written at `path`
    image: Image  # its crossbar programming image
    path: str = "prog.s"  # where `assembly` names its image (beside it) and a target file from
    timings: list[PassTiming] = field(default_factory=list)
    placement: dict[str, Any] = field(default_factory=dict)  # the place pass's summary
    verify_seconds: float = 0.0  # verifying the IR after every pass

    def __repr__(self) -> str:
        return (f"<Program of {self.integer.name} for {self.target.name}: "
                f"{len(self.cores)} cores, {len(self.assembly.splitlines())} lines>")

    @functools.cached_property
    def report(self) -> dict[str, Any]:
        """The compile report (`cimc compile --report`): crossbars, cores, hop-bytes, and the
        cycles, throughput and energy of one inference by the timing model."""
        return program_report(self)

    @functools.cached_property
    def isa_program(self) -> IsaProgram:
        """The program as the assembler would read `assembly` (cimc.isa.program), built
        from the generated code without reading the text back: what the simulator runs."""
        from cimc.emit.program import program_of

        return program_of(self.module, self.target, self.cores, self.path)

    @functools.cached_property
    def simulated_report(self) -> dict[str, Any]:
        """The compile report with the cycles and energy of one simulated inference on an
        all-zero-point input (`cimc compile --report --simulate`)."""
        return program_report(self, simulate=True)

    def simulate(self, inputs: np.ndarray | dict[str, np.ndarray], *,
                 adc_bits: int | None = None, noise: float = 0.0, seed: int = 0) -> Simulation:
        """Run the program on the simulator: float `inputs` (as the ONNX model takes them,
        batches stacked on axis 0) are quantized as the model does, every batch goes
        through the program in one run, and the host finishes (dequantize, float tails).
        The what-ifs of `cimc sim` (docs/simulator.md): `adc_bits` clips every ADC
        conversion to that many bits (None: ideal), `noise` adds Gaussian cell noise of
        that many cell levels, drawn from `seed` once per core per run, so every batch
        of a run sees the same device."""
        from cimc.host.run import simulate_program
        from cimc.isa.simulator import SimOptions

        feeds = model_inputs(self.integer, inputs)
        figures: dict[str, Any] = {}
        outputs = simulate_program(self.integer, self.module, self.target, self.cores,
                                   self.isa_program, self.image,
                                   _whole_batches(self.integer, feeds), figures,
                                   SimOptions(adc_bits=adc_bits, noise_sigma=noise, seed=seed))
        return Simulation({name: outputs[name] for name in self.integer.outputs}, figures)

    def text_for(self, path: str | Path) -> str:
        """The program text to write at `path`: it names the image beside it and a target
        file relative to it."""
        from cimc.emit.program import program_at

        if str(path) == self.path:
            return self.assembly
        return program_at(self.module, self.target, self.cores, path)

    def save(self, path: str | Path) -> None:
        """Write the program at `path` and its crossbar image beside it (suffix .img),
        both or neither."""
        from cimc.diagnostics import CimcError
        from cimc.outputs import OutputSet

        path = Path(path)
        if path.suffix == ".img":
            raise CimcError(f"{path}: the crossbar image is written beside the program with "
                            "suffix .img; name the program .s")
        image = path.with_suffix(".img")
        with OutputSet({"the program": path, "its image": image}) as out:
            out.write(path, self.text_for(path))
            out.write(image, self.image.to_bytes())
            out.commit()


def compile(model: str | Path | Module, target: str | Path | Target = "isaac", *,
            input_shapes: dict[str, tuple[int, ...]] | None = None,
            calibrate: Calibration = None, activations: str = "int8",
            pipeline: str = "latency", stream: int = 0, replicate: float | None = None,
            placer: str = "cpsat", place_effort: float | None = None,
            place_time_limit: float | None = None, partition: str = "optimal",
            batch: int = 1, path: str | Path = "prog.s",
            print_ir_after_all: bool = False, time_passes: bool = False) -> Program:
    """Compile `model` (an ONNX file, QDQ or float, or a module from `prepare`) for `target`.

    The options are those of `cimc compile` (README): `pipeline` latency or throughput,
    `stream` inferences per run, `replicate` crossbar budget, `placer` and its
    `place_effort` and `place_time_limit`; for a model larger than the chip,
    `partition` (optimal or greedy) chooses its phases for a run of `batch` images.
    `path` is where the program will be written
    (its text names the image beside it). Nothing is written; `Program.save` does it.
    """
    from cimc.diagnostics import progress, warn
    from cimc.frontend.quantize import import_model
    from cimc.options import check_backend_options
    from cimc.pass_manager import PassTiming, parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND, BackendOptions

    check_backend_options(activations, stream, replicate=replicate, place_effort=place_effort,
                          place_time_limit=place_time_limit)
    chosen = load_target(target)
    if chosen.activation_bits > 8:  # allowed in a target file, but not what the program does
        warn(f"target {chosen.name!r} gives precision.activation_bits = "
             f"{chosen.activation_bits}, but the ISA's mvm reads 8-bit input elements: the "
             "program computes with 8-bit activations")
    options = BackendOptions(pipeline, stream, replicate, placer, place_time_limit, place_effort,
                             partition, batch)
    verified: list[float] = []
    if not isinstance(model, (str, Path)):
        return _backend(copy.deepcopy(model), chosen, options, str(path), [],
                        print_ir_after_all, time_passes, verified)
    start = time.perf_counter()
    progress(f"import {Path(model).name}")
    module = import_model(str(model), input_shapes, calibrate, activations, target=chosen)
    imported = time.perf_counter() - start
    timings = run_pipeline(module, parse_pipeline(",".join(FRONTEND)),
                           print_after_all=print_ir_after_all, verify_seconds=verified)
    return _backend(module, chosen, options, str(path),
                    [PassTiming("import-onnx", imported), *timings],
                    print_ir_after_all, time_passes, verified)


def _backend(module: Module, target: Target, options: BackendOptions, path: str,
             timings: list[PassTiming], print_after_all: bool, time_passes: bool,
             verified: list[float]) -> Program:
    """The backend pipeline on `module` (after the frontend; rewritten in place)."""
    from cimc.codegen.generate import plan_and_code
    from cimc.diagnostics import progress
    from cimc.emit.image import build_image
    from cimc.emit.program import program_at
    from cimc.pass_manager import PassTiming, backend_passes, run_pipeline
    from cimc.passes.place import Place

    integer = module.copy_sharing_constants()
    backend = backend_passes(options, target)
    timings = timings + run_pipeline(module, backend, print_after_all=print_after_all,
                                     time_passes=time_passes, verify_seconds=verified)
    placed = next((p.summary for p in backend if isinstance(p, Place)), None)
    # Emission translates the code `schedule` generated and kept; Program.save writes it.
    start = time.perf_counter()
    progress("emit")
    cores = plan_and_code(module, target).cores
    text, image = program_at(module, target, cores, path), build_image(module, target)
    timings.append(PassTiming("emit", time.perf_counter() - start))
    return Program(integer, module, target, cores, text, image, path, timings,
                   placed.as_dict() if placed is not None else {}, sum(verified))


def run_reference(model: str | Path | Module, inputs: np.ndarray | dict[str, np.ndarray], *,
                  input_shapes: dict[str, tuple[int, ...]] | None = None,
                  calibrate: Calibration = None,
                  activations: str = "int8") -> dict[str, np.ndarray]:
    """The outputs (by name) of `model` on `inputs` by the IR reference interpreter, which
    defines what a program must compute. A float ONNX model runs in float unless
    `calibrate` quantizes it; a module is taken as `prepare` returned it."""
    module = model if not isinstance(model, (str, Path)) else prepare(
        model, input_shapes, calibrate, activations, keep_float=True)
    return reference_outputs(module, model_inputs(module, inputs))


# Batches the reference interpreter evaluates per call, to bound memory.
BATCHES_PER_CALL = 32


def reference_outputs(module: Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`run_reference` on checked `feeds`, BATCHES_PER_CALL batches at a time."""
    from cimc.reference import run_module
    from cimc.reference.batch import join_batches

    batch, total = _batches(module, feeds)
    parts = []
    for start in range(0, total, BATCHES_PER_CALL):
        stop = min(start + BATCHES_PER_CALL, total)
        parts.append(run_module(module, {
            name: feeds[name][start * batch[name]: stop * batch[name]] if batch[name]
            else feeds[name] for name in feeds}))
    return {name: join_batches([p[name] for p in parts]) for name in module.outputs}


def _batches(module: Module, feeds: dict[str, np.ndarray]) -> tuple[dict[str, int], int]:
    """Each input's batch size (0 for a 0-d input, which holds one batch) and the number
    of batches the feeds stack."""
    batch = {name: (module.values[name].shape or (0,))[0] for name in module.inputs}
    counts = {name: len(feeds[name]) // batch[name] if batch[name] else 1
              for name in module.inputs}
    return batch, min(counts.values(), default=1)


def _whole_batches(module: Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    batch, total = _batches(module, feeds)
    total = max(total, 1)
    return {name: feeds[name][:total * batch[name]] if batch[name] else feeds[name]
            for name in feeds}


def model_inputs(module: Module, inputs: np.ndarray | dict[str, np.ndarray],
                 where: str = "inputs") -> dict[str, np.ndarray]:
    """`inputs` by the module's input names, checked against their types and cast."""
    from cimc.tensor_io import check_inputs, named_arrays

    names = list(module.inputs)
    return check_inputs(where, named_arrays(where, inputs, names),
                        {name: module.values[name] for name in names})


def program_report(program: Program, input_codes: dict[str, np.ndarray] | None = None,
                   simulate: bool = False) -> dict[str, Any]:
    """The compile report: static figures and bounds, and cycles/throughput/energy from
    the timing model (cimc/analysis/timing.py); with `simulate`, those from one simulated
    inference instead (on the first of `input_codes`, the quantized test inputs by
    program port, else on an all-zero-point input). `figures_from` says which."""
    from cimc.analysis.timing import model
    from cimc.codegen.generate import plan_and_code
    from cimc.emit.program import encoded_bytes, instruction_count
    from cimc.emit.report import (
        modelled_figures,
        phased_figures,
        schedule_bounds,
        static_figures,
    )

    generated = plan_and_code(program.module, program.target)
    if generated.phases:  # a model larger than the chip, run in phases
        report = phased_figures(program.module, program.target, generated, program.cores)
        report.update(
            instructions=instruction_count(program.cores),
            program_bytes=encoded_bytes(program.module, program.target, program.cores,
                                        program.path),
            figures_from="timing model per phase (cimc/analysis/timing.py) and the time of "
                         "its wprog instructions; --simulate for the simulated totals")
        if simulate:
            simulated = _simulated_report(program, input_codes, phased=True)
            report["modelled_cycles"] = report["cycles"]
            report.update(simulated)
    elif simulate:
        report = _simulated_report(program, input_codes)
    else:
        timing = model(program.module, program.target,
                       plan_and_code(program.module, program.target).plan)
        report = static_figures(program.module, program.target, program.cores)
        report.update(schedule_bounds(program.module, program.target, timing))
        report.update(modelled_figures(program.module, program.target, timing))
        report.update(
            instructions=instruction_count(program.cores),
            program_bytes=encoded_bytes(program.module, program.target, program.cores,
                                        program.path),
            figures_from="timing model (cimc/analysis/timing.py: the plan's tasks with the "
                         "simulator's instruction costs; within 5% of the simulator on the "
                         "bench models); --simulate for the simulated figures")
    report["pass_seconds"] = {t.name: round(t.seconds, 6) for t in program.timings}
    if program.placement:  # docs/placement.md: the placer, its bound and gap, time-out
        report["placement"] = program.placement
        report["hop_bytes_bound"] = program.placement["hop_bytes_bound"]
        report.setdefault("max_link_bytes", program.placement["max_link_bytes"])
    return report


def _simulated_report(program: Program, input_codes: dict[str, np.ndarray] | None,
                      phased: bool = False) -> dict[str, Any]:
    """The figures of one simulated run: all of them, or (`phased`) the simulated ones
    only (the static figures of a run of phases are its phases')."""
    import numpy as np

    from cimc.emit.report import program_figures, simulated_figures
    from cimc.isa.simulator import run_program

    assembled = program.isa_program
    if input_codes is not None:
        feeds = {name: codes[:1] for name, codes in input_codes.items()}
        source = "simulation of one inference on the first of --inputs"
    else:
        feeds = {d.name: np.full((1, *d.shape), d.zp, dtype=np.int64) for d in assembled.inputs}
        source = ("simulation of one inference on an all-zero-point input (no --inputs given); "
                  "the program has no data-dependent control flow, so every input takes "
                  "this time and nearly this energy")
    _, sim = run_program(assembled, program.image, program.target, feeds)
    if phased:
        report = simulated_figures(program.module, assembled, sim)
        report["programmed_bytes"] = sim["programmed_bytes"]
        report["figures_from"] = source
        return report
    report = program_figures(program.module, program.target, program.cores, assembled, sim)
    report["figures_from"] = source
    return report
