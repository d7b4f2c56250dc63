"""Running a compiled program on the simulator in place of the module it was compiled
from, as `Program.simulate` and `cimc run --engine sim` do: quantize the inputs as
the model's `quantize` ops do, simulate, then let the host finish (dequantize,
float tails such as Softmax)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cimc.dialect.host import host_float_ops, ports
from cimc.emit.report import program_figures
from cimc.host.ports import from_samples, to_storage
from cimc.ir.module import Module
from cimc.isa.simulator import SimOptions, run_program
from cimc.reference import run_module

if TYPE_CHECKING:
    from cimc.codegen.generate import CoreCode
    from cimc.isa.image import Image
    from cimc.isa.program import Program
    from cimc.targets import Target


def _host_tail(module: Module) -> Module:
    """The ops the host runs after the program: inputs are the program's outputs."""
    tail = Module(module.name + ".host")
    _, outputs = ports(module)
    for port in outputs:
        tail.add_input(port.value, module.values[port.value])
    for name in module.outputs:  # a model input passed through: the host has it exactly
        if name in module.inputs and name not in tail.values:
            tail.add_input(name, module.values[name])
    keep = host_float_ops(module)
    for op in module.ops():
        if op.kind == "dequantize" or op.name in keep:
            for value in op.inputs:
                if module.is_constant(value) and value not in tail.values:
                    tail.add_constant(value, module.constants[value], module.values[value].quant)
            tail.add_op(op.kind, op.inputs, [module.values[v] for v in op.outputs], name=op.name,
                        outputs=list(op.outputs), attrs=dict(op.attrs))
    tail.outputs = list(module.outputs)
    return tail


def _quantized_inputs(module: Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Codes of the program inputs, from the model's own quantize ops (reference semantics)."""
    inputs, _ = ports(module)
    probe = module.copy_sharing_constants()
    probe.outputs = [p.value for p in inputs]
    probe.remove_dead()
    values = run_module(probe, feeds)
    return {p.name: to_storage(values[p.value]) for p in inputs}


def simulate_program(module: Module, backend: Module, target: Target,
                     cores: dict[int, CoreCode], program: Program, image: Image,
                     feeds: dict[str, np.ndarray],
                     report: dict[str, Any] | None = None,
                     options: SimOptions | None = None) -> dict[str, np.ndarray]:
    """Outputs of `module` (after the frontend) on `feeds`, computed by `program` (the
    in-memory program, + `image`) compiled from it as `backend` with `cores` for `target`.

    When `report` is given it is filled with the compile figures and the
    simulator's (cycles, energy... per inference; see docs/backend.md). `options` are
    the simulator's (what-ifs: ADC bits, cell noise; default exact).
    """
    from cimc.reference import run_module

    codes, simulated = run_program(program, image, target, _quantized_inputs(module, feeds),
                                   options)
    if report is not None:
        report.update(program_figures(backend, target, cores, program, simulated))
        report["batch"] = simulated["batch"]
    _, outputs = ports(module)
    results = {}
    for port in outputs:
        value = codes[port.name]
        results[port.value] = from_samples(value, module.values[port.value])
    results.update({name: feeds[name] for name in module.outputs if name in module.inputs})
    return run_module(_host_tail(module), results)
