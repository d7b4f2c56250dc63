"""The compiler's pipelines: flat, named lists of passes, in the order they run.

Each name is a key of passes.PASSES; `cimc opt -p` accepts the same names.
The ONNX import (cimc.frontend.import_onnx) runs before FRONTEND and is not a
pass: it builds the module the passes rewrite.
"""

# From an imported ONNX model to integer ops carrying scales and zero points.
FRONTEND: list[str] = [
    "canonicalize",
    "fold-qdq",
]

# From the quantized tensor IR to a program for a target: lower, tile,
# replicate, place, schedule, emit (filled in as the backend passes land).
BACKEND: list[str] = [
    "lower",
    "tile",
    "replicate",
    "place",
    "schedule",
    "emit-asm",
]
