"""argparse types of the numeric options: a value out of range (or NaN, or infinite) is
a usage error naming the option and the range, before any file is read."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cimc.options import Range


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in low..high (no upper bound when `high` is None)."""
    wanted = f"a whole number from {low} to {high}" if high is not None else \
        f"a whole number >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number; give {wanted}"
                                             ) from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range; give {wanted}")
        return value

    parse.__name__ = "whole number"
    return parse


def real(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A finite number >= low (> low when `above`) and <= high."""
    return within(Range(low, high, above))


def within(allowed: Range) -> Callable[[str], float]:
    """A number in `allowed` (a range the API owns, cimc/options.py)."""
    wanted = allowed.wanted

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number; give {wanted}") from None
        if not allowed.holds(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {wanted}")
        return value

    parse.__name__ = "number"
    return parse
