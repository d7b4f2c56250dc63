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


def input_digits(x: np.ndarray, input_bits: int, signed: bool, dac_bits: int) -> np.ndarray:
    """DAC digits of x [batch, rows]: int64 [steps, batch, rows]; step t weighs 2^(t*dac_bits)."""
    x = np.asarray(x, dtype=np.int64)
    steps = input_steps(input_bits, dac_bits)
    mask = (1 << dac_bits) - 1
    digits = [(x >> (t * dac_bits)) & mask for t in range(steps)]
    if signed:
        digits[-1] = x >> ((steps - 1) * dac_bits)  # signed top digit
    return np.stack(digits)


def conductance(cells: np.ndarray, analog: Analog, core: int) -> np.ndarray:
    """Cell conductances of one core's crossbars, float64, with the run's noise."""
    levels = cells.astype(np.float64)
    if analog.noise_sigma:
        rng = np.random.default_rng([analog.seed, core])
        levels = levels + analog.noise_sigma * rng.standard_normal(cells.shape)
    return levels


def mvm_exact(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x [batch, rows] . W [rows, cols] exactly, int64 (float64 BLAS when provably exact)."""
    x = np.asarray(x)
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(weights).sum(axis=0).max(initial=0))
    if bound < _FLOAT_EXACT:
        product = x.astype(np.float64) @ weights.astype(np.float64)
        return product.astype(np.int64)
    return x.astype(np.int64) @ weights.astype(np.int64)


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
    digits = input_digits(x, input_bits, signed, dac_bits)
    steps, batch, rows = digits.shape
    slices, _, cols = planes.shape
    matrix = planes.transpose(1, 0, 2).reshape(rows, slices * cols)
    sums = digits.reshape(steps * batch, rows).astype(np.float64) @ matrix
    partial = np.rint(sums).reshape(steps, batch, slices, cols)
    if adc_bits is not None:
        top = float((1 << adc_bits) - 1)
        partial[:-1] = np.clip(partial[:-1], 0.0, top)
        partial[-1] = np.clip(partial[-1], -top if signed else 0.0, top)
    codes = partial.astype(np.int64)
    slice_weight = np.left_shift(1, cell_bits * np.arange(slices, dtype=np.int64))
    step_weight = np.left_shift(1, dac_bits * np.arange(steps, dtype=np.int64))
    columns = np.einsum("tbsc,s->tbc", codes, slice_weight)
    y = np.einsum("tbc,t->bc", columns, step_weight)
    offset = np.asarray(x, dtype=np.int64).sum(axis=1, keepdims=True) << (weight_bits - 1)
    return y - offset
