"""The compiler's pipelines: flat, named lists of passes, in the order they run.

Each name is a key of cimc.passes.PASSES; `cimc opt -p` accepts the same names.
The ONNX import (cimc.frontend.importer.import_onnx) runs before FRONTEND and is not a
pass: it builds the module the passes rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cimc.pass_base import Pass

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
    "replicate",
    "place",
    "schedule",
]


@dataclass(frozen=True)
class BackendOptions:
    """What a user chooses about the backend (`cimc compile` / `cimc run` flags)."""

    target: str = "isaac"  # a bundled name or a .toml path
    pipeline: str = "latency"  # schedule: latency | throughput
    stream: int = 0  # schedule: inferences per run in throughput mode (0: its default)
    replicate: float | None = None  # replicate: crossbar budget fraction (None: its default)
    placer: str = "cpsat"  # place: cpsat | anneal | sequential | snake
    place_time_limit: float | None = None  # place: wall-clock safety net, s (None: none)
    place_effort: float | None = None  # place: counted search work (None: its default, 1)


def backend_passes(options: BackendOptions) -> list[Pass]:
    """The BACKEND pipeline configured by `options`."""
    from cimc.pass_manager import parse_pipeline

    passes = parse_pipeline(",".join(BACKEND))
    settings: dict[str, dict[str, Any]] = {
        "schedule": {"pipeline": options.pipeline, "stream": options.stream},
        "place": {"placer": options.placer},
        "replicate": {},
    }
    if options.replicate is not None:
        settings["replicate"]["budget"] = options.replicate
    if options.place_time_limit is not None:
        settings["place"]["time_limit"] = options.place_time_limit
    if options.place_effort is not None:
        settings["place"]["effort"] = options.place_effort
    set_target(passes, options.target)
    for pass_ in passes:
        for field, value in settings.get(pass_.name, {}).items():
            setattr(pass_, field, value)
    return passes


def set_target(passes: list[Pass], target: str) -> None:
    """Give every pass with a `target` option (the backend passes; the Pass base class
    has none) the same `target`, a bundled name or a .toml path."""
    import dataclasses

    for pass_ in passes:
        if any(f.name == "target" for f in dataclasses.fields(pass_)):
            pass_.target = target  # type: ignore[attr-defined]
