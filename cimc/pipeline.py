"""The compiler's pipelines: flat, named lists of passes, in the order they run.

Each name is a key of cimc.passes.PASSES; `cimc opt -p` accepts the same names.
The ONNX import (cimc.frontend.importer.import_onnx) runs before FRONTEND and is not a
pass: it builds the module the passes rewrite. The pass manager (cimc/pass_manager.py)
turns these names and a user's BackendOptions into configured passes.
"""

from __future__ import annotations

from dataclasses import dataclass

# From an imported ONNX model to integer ops carrying scales and zero points.
FRONTEND: list[str] = [
    "canonicalize",
    "fold-qdq",
]

# From the quantized tensor IR to a scheduled module for a target, its code
# generated and kept (Module.analysis); the program text, image and data header
# are translations of it (cimc/emit/), not passes.
BACKEND: list[str] = [
    "lower",
    "tile",
    "partition",
    "replicate",
    "place",
    "schedule",
]


@dataclass(frozen=True)
class BackendOptions:
    """What a user chooses about the backend (`cimc compile` / `cimc run` flags)."""

    pipeline: str = "latency"  # schedule: latency | throughput
    stream: int = 0  # schedule: inferences per run in throughput mode (0: its default)
    replicate: float | None = None  # replicate: crossbar budget fraction (None: its default)
    placer: str = "cpsat"  # place: cpsat | anneal | sequential | snake
    place_time_limit: float | None = None  # place: wall-clock safety net, s (None: none)
    place_effort: float | None = None  # place: counted search work (None: its default, 1)
    partition: str = "optimal"  # partition: optimal | greedy (a model larger than the chip)
    batch: int = 1  # partition, schedule: images per run of a model in phases
