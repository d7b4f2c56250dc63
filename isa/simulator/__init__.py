"""The simulator: runs assembled programs exactly and tells how long they take
and how much energy they use.

    from cimc.isa.simulator import SimOptions, run_program
    outputs, report = run_program(program, image, target, {"x": codes}, SimOptions())

Every memory has a leading batch axis: the batch of inputs runs in lockstep
(control flow is data-independent), while cycles and energy are those of one
run of the program. Semantics follow isa/table.py and docs/isa.md; where they
leave a choice, the simulator does this:
- mvm: exact x . W with the ideal ADC; the what-ifs (SimOptions.adc_bits,
  noise_sigma, seed) and `bit_level` run the bit-serial, bit-sliced model of
  crossbar.py (its docstring says how signed inputs and clipping work).
- sync waits for every core that has a stream; a core that halted instead is
  reported as a deadlock. Running past the last instruction halts.
- ld/st share one global-memory channel of global_bytes_per_cycle; wprog
  shares one weight channel of weight_bytes_per_cycle (reprogram.py); messages
  book mesh links (network.py); other instructions take the fixed latency of
  timing.py.
- wprog: in a phased image (isa/image.py) the crossbars start unprogrammed; an
  mvm on a group whose cells are not in its crossbars is an error.
- copy reads all its source bytes before writing; i32 results wrap, i8/u8
  results saturate.

Modules: crossbar (bit-sliced MVM, ADC, noise), memory (batched byte
memories), registry + control/vector/matrix/movement/reprogram (one semantic
function per instruction), timing (static cost per instruction), network (routes,
links), core (a core's state and decoded stream), blocks (straight-line code and
counted loops translated once into Python functions, same effect as interpreting
them), batch (counted loops of elementwise vector instructions run whole when
their iterations are independent), machine (the discrete-event
scheduler, the interpreter loop and cross-core instructions), report, trace, run
(the API).
"""

from cimc.isa.simulator import (  # noqa: F401  (fill the registry)
    control,
    matrix,
    movement,
    reprogram,
    vector,
)
from cimc.isa.simulator.run import (
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
