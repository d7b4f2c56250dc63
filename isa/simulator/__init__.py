"""The simulator: runs assembled programs exactly and tells how long they take
and how much energy they use.

    from isa.simulator import SimOptions, run_program
    outputs, report = run_program(program, image, target, {"x": codes}, SimOptions())

Modules: crossbar (bit-sliced MVM, ADC, noise), memory (batched byte memories),
registry + control/vector/matrix/movement (one semantic function per
instruction), timing (static cost per instruction), network (routes, links),
machine (cores and the discrete-event scheduler), report, trace, run (the API).
"""

from isa.simulator import control, matrix, movement, vector  # noqa: F401  (fill the registry)
from isa.simulator.run import (
    SimOptions,
    Simulation,
    dequantize_output,
    quantize_input,
    run_float,
    run_program,
    simulate,
)

__all__ = [
    "SimOptions",
    "Simulation",
    "dequantize_output",
    "quantize_input",
    "run_float",
    "run_program",
    "simulate",
]
