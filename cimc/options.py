"""The ranges of the user's numeric choices, owned by the API: `cimc.compile` checks its
arguments against them and the command line's flags (cimc/cli/numbers.py) parse
against the same ones, so both refuse the same values with the same range in the
message."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimc.diagnostics import CimcError

# The placer's budget is wall-clock seconds; a day is beyond any useful search.
MAX_SECONDS = 86_400.0

# The activation types a float model can be quantized to.
ACTIVATIONS = ("int8", "uint8")


@dataclass(frozen=True)
class Range:
    """Finite numbers >= low (> low when `above`) and <= high (no bound when None)."""

    low: float
    high: float | None = None
    above: bool = False

    @property
    def wanted(self) -> str:
        """What to give, for a message: 'a finite number >= 0 and <= 1'."""
        bound = f"> {self.low:g}" if self.above else f">= {self.low:g}"
        return f"a finite number {bound}" + (f" and <= {self.high:g}"
                                             if self.high is not None else "")

    def holds(self, value: float) -> bool:
        too_low = value <= self.low if self.above else value < self.low
        return math.isfinite(value) and not too_low and (self.high is None or value <= self.high)


# The backend's numeric choices, by the name of the `cimc.compile` argument.
REPLICATE = Range(0.0, 1.0)  # a fraction of the target's crossbars
PLACE_EFFORT = Range(0.0, 100.0)  # counted search work; 1 is the default
PLACE_TIME_LIMIT = Range(0.0, MAX_SECONDS, above=True)
BACKEND_RANGES = {"replicate": REPLICATE, "place_effort": PLACE_EFFORT,
                  "place_time_limit": PLACE_TIME_LIMIT}


def check_backend_options(activations: str, stream: int, **numbers: float | None) -> None:
    """Refuse an activation type or a number out of its range (`numbers` by the names of
    BACKEND_RANGES; None: the default); the passes check the names (placer, pipeline)."""
    if activations not in ACTIVATIONS:
        raise CimcError(f"activations={activations!r}: choose 'int8' or 'uint8'")
    if stream < 0:
        raise CimcError(f"stream={stream}: give a whole number >= 1 (0: the mode's default)")
    for name, value in numbers.items():
        if value is not None and not BACKEND_RANGES[name].holds(value):
            raise CimcError(f"{name}={value}: out of range; give {BACKEND_RANGES[name].wanted}")
