"""cimc: a compiler from ONNX networks to compute-in-memory accelerator programs.

The Python API (cimc.api, docs/api.md):

    import cimc
    program = cimc.compile("model.onnx", target="isaac")   # -> cimc.Program
    outputs = program.simulate(inputs).outputs
"""

from cimc.api import (
    Program,
    Simulation,
    compile,
    import_onnx,
    load_target,
    prepare,
    run_reference,
)

__version__ = "0.1.0"

__all__ = [
    "Program",
    "Simulation",
    "compile",
    "import_onnx",
    "load_target",
    "prepare",
    "run_reference",
]
