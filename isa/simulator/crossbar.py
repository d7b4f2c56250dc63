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

The bit-level path works a chunk of the batch at a time, so each pass over its
partial sums stays in cache; without noise, two slices share one column of the
matrix product (their sums are whole numbers that fit float32 side by side and
come apart exactly), which halves the product.
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
                 dtype: np.dtype | type = np.int64, out: np.ndarray | None = None
                 ) -> np.ndarray:
    """DAC digits of x [batch, rows]: [steps, batch, rows] in `dtype` (int64 unless asked;
    written into `out` if given); step t weighs 2^(t*dac_bits)."""
    x = np.asarray(x)
    # 8-bit codes shift in int16, 8x less memory traffic than int64; each step's digits are
    # written straight into the output (in the matrix product's float type for the MVM).
    x = x.astype(np.int16 if x.dtype.itemsize == 1 else np.int64)
    steps = input_steps(input_bits, dac_bits)
    mask = (1 << dac_bits) - 1
    digits = np.empty((steps, *x.shape), dtype=dtype) if out is None else out
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


# Rows of the batch worked at once: every pass over the partial sums then stays in cache
# (about this many float32 of them per chunk).
_CHUNK_SUMS = 1 << 18


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
    integral: bool = False,
) -> np.ndarray:
    """The MVM as the hardware does it, int64 [batch, cols].

    `planes` [S, rows, cols] are the conductances of the group's slices (levels
    plus any noise; `integral`: they are whole levels, no noise). All (step, slice,
    column) partial sums of a chunk of the batch come from one matrix product; the
    ADC rounds and clips each.
    """
    steps = input_steps(input_bits, dac_bits)
    slices, rows, cols = planes.shape
    # float32 is exact for integer sums below 2^24 (and rounds noisy ones well enough);
    # larger arrays or digits need float64.
    largest = rows * ((1 << dac_bits) - 1) * (float(planes.max(initial=0)) + 1)
    exact = np.dtype(np.float32 if largest * (1 << input_bits) < 2.0**24 else np.float64)
    x = np.asarray(x)
    batch = x.shape[0]
    base = _pair_base(planes, rows, dac_bits) if integral and slices % 2 == 0 else 0
    if base and exact == np.float32:
        # Two slices share a column (_paired_partial_sums): the partial sums come in two
        # parts, the even slices' and the odd slices'.
        pairs = planes[0::2] + base * planes[1::2]
        matrix = pairs.transpose(1, 0, 2).reshape(rows, (slices // 2) * cols)
        parts = [range(0, slices, 2), range(1, slices, 2)]
    else:
        base = 0
        matrix = planes.transpose(1, 0, 2).reshape(rows, slices * cols)
        parts = [range(slices)]
    matrix = matrix.astype(exact)
    width = matrix.shape[1]
    step_weight = np.exp2(dac_bits * np.arange(steps)).astype(exact)
    top = None if adc_bits is None else float((1 << adc_bits) - 1)
    y = np.empty((batch, cols), np.int64)
    chunk = min(batch, max(1, _CHUNK_SUMS // (steps * slices * cols)))
    scratch = _scratch(exact, (3 if base else 2) * steps * chunk * max(rows, width))
    digits_buffer, sums_buffer, high_buffer = (
        scratch[k * steps * chunk * max(rows, width):] for k in range(3))
    for lo in range(0, batch, chunk):
        n = min(batch, lo + chunk) - lo
        digits = input_digits(x[lo : lo + n], input_bits, signed, dac_bits, exact,
                              out=digits_buffer[: steps * n * rows].reshape(steps, n, rows))
        shape = (steps * n, width)
        sums = np.matmul(digits.reshape(steps * n, rows), matrix,
                         out=sums_buffer[: steps * n * width].reshape(shape))
        sums_of_parts: tuple[np.ndarray, ...]
        if base:  # the digits are used: their buffer takes the even slices
            sums_of_parts = _paired_partial_sums(
                sums, base, digits_buffer[: sums.size].reshape(shape),
                high_buffer[: sums.size].reshape(shape))
        else:
            if not integral:  # whole levels times whole digits: the sums are whole already
                np.rint(sums, out=sums)
            sums_of_parts = (sums,)
        out = np.zeros((n, cols), np.float64)
        for part, partial in zip(parts, sums_of_parts, strict=True):
            partial = partial.reshape(steps, -1)  # [step, batch x slice x column]
            if top is not None:
                np.clip(partial[:-1], 0.0, top, out=partial[:-1])
                np.clip(partial[-1], -top if signed else 0.0, top, out=partial[-1])
            # Shift-and-add: over steps in the same precision (bounded above), over slices
            # in float64 (whole-array adds, no transposed copy; x 2^k is exact).
            per_slice = (step_weight @ partial).reshape(n, len(part), cols)
            for k, s in enumerate(part):
                out += per_slice[:, k, :] * float(1 << (cell_bits * s))
        offset = x[lo : lo + n].astype(np.int64).sum(axis=1, keepdims=True)
        np.subtract(out, offset << (weight_bits - 1), out=y[lo : lo + n], casting="unsafe")
    return y


_SCRATCH: dict[np.dtype, np.ndarray] = {}


def _scratch(dtype: np.dtype, size: int) -> np.ndarray:
    """A flat work array of at least `size`, kept between MVMs: a fresh one each time
    would be mapped and faulted in anew (a quarter of a bit-level MVM's time, measured)."""
    buffer = _SCRATCH.get(dtype)
    if buffer is None or buffer.size < size:
        buffer = _SCRATCH[dtype] = np.empty(size, dtype)
    return buffer


def _pair_base(planes: np.ndarray, rows: int, dac_bits: int) -> int:
    """B, a power of two, such that two slices' partial sums s0 + B * s1 are exact in
    float32 and come apart again (|s| <= m < B / 2); 0 when none is small enough.

    A partial sum is a digit (magnitude at most 2^dac - 1, the signed top step's
    included) times whole levels summed over the rows: |s| <= m = rows x that x the
    largest level."""
    m = rows * ((1 << dac_bits) - 1) * int(planes.max(initial=0))
    base = 1 << (2 * m).bit_length()  # > 2m
    return base if (base + 1) * m < 1 << 24 else 0


def _paired_partial_sums(packed: np.ndarray, base: int, low: np.ndarray,
                         high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The partial sums of slices 2k and 2k+1 from the product with their shared column.

    The column holds levels_2k + B x levels_2k+1, so the product is s_2k + B x s_2k+1,
    exactly (below 2^24, _pair_base); s_2k+1 is that over B rounded (|s_2k| / B < 1/2),
    s_2k the rest. Returns (even slices' sums, odd slices' sums) in `low` and `high`,
    float32 arrays shaped as `packed`.
    """
    np.multiply(packed, 1.0 / base, out=high)  # exact: B is a power of two
    np.rint(high, out=high)
    np.multiply(high, float(base), out=low)
    np.subtract(packed, low, out=low)
    return low, high
