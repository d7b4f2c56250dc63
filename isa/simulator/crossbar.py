"""The crossbar matrix-vector product: bit-serial inputs, bit-sliced weights, ADC.

Physically an MVM on a group streams the input x bit-serially, `dac_bits` bits
per step; for each (step, slice, column) the crossbar sums input digit times
cell level along the rows, an ADC digitizes that partial sum, and the digital
side shifts and adds over slices and steps, then subtracts the offset-binary
bias 2^(weight_bits-1) * sum(x).

Input digits: step t carries bits [t*dac, (t+1)*dac) of the b-bit code. For a
signed (int8) input the top step carries the top bits as a signed digit (an
arithmetic shift), so with a 1-bit DAC the sign step is weighted -2^(b-1).
Steps = ceil(b / dac_bits).

ADC what-if (`adc_bits`): each digitized partial sum is rounded to an integer
and clipped to [0, 2^adc_bits - 1] (to +-(2^adc_bits - 1) on the signed top
step, whose sum may be negative). Noise what-if: each cell's conductance is
its level plus N(0, sigma^2) in units of one cell level, drawn once per run
from the seed (device-to-device variation, the same for every read).
With an ideal ADC and no noise the result is exactly x . W, which the exact
path computes directly as one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Float64 matrix products are exact while every partial sum stays below 2^53.
_FLOAT_EXACT = float(1 << 52)


@dataclass(frozen=True)
class Analog:
    """Non-idealities of the crossbars (defaults: ideal)."""

    adc_bits: int | None = None  # None: unbounded ADC
    noise_sigma: float = 0.0  # cell-conductance noise, in cell levels
    seed: int = 0

    @property
    def ideal(self) -> bool:
        return self.adc_bits is None and self.noise_sigma == 0.0


def input_steps(input_bits: int, dac_bits: int) -> int:
    """Bit-serial steps of one MVM: ceil(input_bits / dac_bits)."""
    return -(-input_bits // dac_bits)


def input_digits(x: np.ndarray, input_bits: int, signed: bool, dac_bits: int,
                 dtype: np.dtype | type = np.int64) -> np.ndarray:
    """DAC digits of x [batch, rows]: [steps, batch, rows] in `dtype` (int64 unless asked);
    step t weighs 2^(t*dac_bits)."""
    x = np.asarray(x)
    # 8-bit codes shift in int16, 8x less memory traffic than int64; each step's digits are
    # written straight into the output (in the matrix product's float type for the MVM).
    x = x.astype(np.int16 if x.dtype.itemsize == 1 else np.int64)
    steps = input_steps(input_bits, dac_bits)
    mask = (1 << dac_bits) - 1
    digits = np.empty((steps, *x.shape), dtype=dtype)
    for t in range(steps):
        if signed and t == steps - 1:
            np.right_shift(x, t * dac_bits, out=digits[t], casting="unsafe")  # signed top digit
        else:
            np.bitwise_and(x >> (t * dac_bits), mask, out=digits[t], casting="unsafe")
    return digits


def conductance(cells: np.ndarray, analog: Analog, core: int) -> np.ndarray:
    """Cell conductances of one core's crossbars, float64, with the run's noise."""
    levels = cells.astype(np.float64)
    if analog.noise_sigma:
        rng = np.random.default_rng([analog.seed, core])
        levels = levels + analog.noise_sigma * rng.standard_normal(cells.shape)
    return levels


def exact_weights(weights: np.ndarray, input_bits: int) -> np.ndarray:
    """W in the cheapest dtype whose matrix product with input_bits-bit codes is exact."""
    bound = float(np.abs(weights).sum(axis=0).max(initial=0)) * (1 << input_bits)
    if bound < 2.0**24:
        return weights.astype(np.float32)
    if bound < _FLOAT_EXACT:
        return weights.astype(np.float64)
    return weights.astype(np.int64)


def mvm_exact(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x [batch, rows] . W exactly; `weights` from exact_weights (or any int array)."""
    if np.issubdtype(weights.dtype, np.integer):
        weights = exact_weights(weights, 8 * np.asarray(x).dtype.itemsize)
    return (np.asarray(x).astype(weights.dtype) @ weights).astype(np.int64)


def mvm_bit_level(
    x: np.ndarray,
    planes: np.ndarray,
    *,
    weight_bits: int,
    cell_bits: int,
    input_bits: int,
    signed: bool,
    dac_bits: int,
    adc_bits: int | None,
) -> np.ndarray:
    """The MVM as the hardware does it, int64 [batch, cols].

    `planes` [S, rows, cols] are the conductances of the group's slices (levels
    plus any noise). All (step, slice, column) partial sums come from one
    matrix product; the ADC rounds and clips each.
    """
    steps = input_steps(input_bits, dac_bits)
    slices, rows, cols = planes.shape
    # float32 is exact for integer sums below 2^24 (and rounds noisy ones well enough);
    # larger arrays or digits need float64.
    largest = rows * ((1 << dac_bits) - 1) * (float(planes.max(initial=0)) + 1)
    exact = np.dtype(np.float32 if largest * (1 << input_bits) < 2.0**24 else np.float64)
    digits = input_digits(x, input_bits, signed, dac_bits, exact)
    batch = digits.shape[1]
    matrix = planes.transpose(1, 0, 2).reshape(rows, slices * cols).astype(exact)
    sums = digits.reshape(steps * batch, rows) @ matrix
    partial = np.rint(sums, out=sums).reshape(steps, batch * slices * cols)
    if adc_bits is not None:
        top = float((1 << adc_bits) - 1)
        np.clip(partial[:-1], 0.0, top, out=partial[:-1])
        np.clip(partial[-1], -top if signed else 0.0, top, out=partial[-1])
    # Shift-and-add: over steps in the same precision (bounded above), over slices in float64.
    step_weight = np.exp2(dac_bits * np.arange(steps)).astype(exact)
    per_slice = (step_weight @ partial).reshape(batch, slices, cols)
    y = per_slice[:, 0, :].astype(np.float64)
    for s in range(1, slices):  # whole-array adds, no transposed copy; x 2^k is exact
        y += per_slice[:, s, :] * float(1 << (cell_bits * s))
    offset = np.asarray(x, dtype=np.int64).sum(axis=1, keepdims=True) << (weight_bits - 1)
    return y.astype(np.int64) - offset
