"""Fixed-point requantization, the one definition shared by the reference
interpreter, the lowering and the simulator.

A real multiplier m > 0 is stored as (M, shift) with 2^30 <= M < 2^31 and
m ~= M * 2^-shift; applying it to an integer accumulator rounds half to even,
as onnxruntime's float requantization does, but exactly in int64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

MULTIPLIER_BITS = 31
MAX_SHIFT = 62
# Why a multiplier can be out of range, and what to do (said by every caller).
SCALES_ADVICE = ("the quantization scales of the operands and the result are out of "
                 "proportion, as after a broken calibration; re-quantize the model with "
                 "representative data")


def fixed_point(multiplier: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(M, shift) int64 arrays for real multipliers (any shape, each > 0).

    A zero multiplier (a dead channel) maps to M = 0, shift = 0.
    """
    m = np.atleast_1d(np.asarray(multiplier, dtype=np.float64))
    mant = np.zeros(m.shape, dtype=np.int64)
    shift = np.zeros(m.shape, dtype=np.int64)
    for i, value in enumerate(m.flat):
        if value <= 0.0 or not math.isfinite(value):
            if value < 0.0 or not math.isfinite(value):
                raise ValueError(f"requantization multiplier {value} is not a positive number")
            continue
        frac, exp = math.frexp(value)  # value = frac * 2^exp, 0.5 <= frac < 1
        q = round(frac * (1 << MULTIPLIER_BITS))
        if q == 1 << MULTIPLIER_BITS:
            q //= 2
            exp += 1
        s = MULTIPLIER_BITS - exp
        if s > MAX_SHIFT:  # too small to matter: scale down the mantissa instead
            q >>= s - MAX_SHIFT
            s = MAX_SHIFT
        if s < 0:
            raise ValueError(f"requantization multiplier {value:.6g} is too large (at most "
                             f"2^{MULTIPLIER_BITS}): {SCALES_ADVICE}")
        mant.flat[i] = q
        shift.flat[i] = s
    return mant.reshape(np.shape(multiplier)), shift.reshape(np.shape(multiplier))


def rounding_shift(value: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round_half_even(value / 2^shift) for int64 arrays, exact."""
    value = np.asarray(value, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    floor = value >> shift
    rem = value - (floor << shift)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    up = (rem > half) | ((rem == half) & (shift > 0) & ((floor & 1) == 1))
    return floor + up.astype(np.int64)


def rounding_shifter(shift: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """rounding_shift(value, shift) for one fixed `shift` (0..MAX_SHIFT), as a function of
    int64 values with |value| <= 2^62 (a product of two int32): the same results.

    Round half to even is floor((value + 2^(s-1) - 1 + odd) / 2^s), odd the parity of
    floor(value / 2^s): a remainder below half stays, above half carries, exactly half
    carries only from an odd floor. The bias is worked out once, so a call is five array
    operations instead of a dozen (the simulator's requant applies one table many times).
    """
    shift = np.asarray(shift, dtype=np.int64)
    positive = shift > 0
    odd = positive.astype(np.int64)  # s = 0: no rounding, neither bias nor parity
    bias = np.where(positive, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)) - 1, 0)

    def shifted(value: np.ndarray) -> np.ndarray:
        out = value >> shift
        out &= odd
        out += bias
        out += value
        out >>= shift
        return out

    return shifted


def apply(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round_half_even(acc * M / 2^shift), int64; mult/shift broadcast against acc."""
    return rounding_shift(np.asarray(acc, dtype=np.int64) * np.asarray(mult, dtype=np.int64), shift)


def saturate(values: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """Clip to the range of an integer dtype and cast."""
    info = np.iinfo(np.dtype(dtype))
    return np.clip(values, info.min, info.max).astype(dtype)
