"""The simulator's crossbar MVM: bit-serial inputs on bit-sliced weights vs numpy x @ W."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.isa.image import group_weights, program_group
from cimc.isa.simulator.crossbar import (
    Analog,
    _pair_base,
    _paired_partial_sums,
    conductance,
    input_digits,
    mvm_bit_level,
    mvm_exact,
)


def _inputs(rng: np.random.Generator, signed: bool, shape: tuple[int, int]) -> np.ndarray:
    if signed:
        return rng.integers(-128, 128, size=shape).astype(np.int8)
    return rng.integers(0, 256, size=shape).astype(np.uint8)


def _bit_level(x: np.ndarray, digits: np.ndarray, weight_bits: int, cell_bits: int,
               dac_bits: int, adc_bits: int | None = None,
               planes: np.ndarray | None = None) -> np.ndarray:
    return mvm_bit_level(
        x, digits.astype(np.float64) if planes is None else planes,
        weight_bits=weight_bits, cell_bits=cell_bits, input_bits=8,
        signed=x.dtype == np.int8, dac_bits=dac_bits, adc_bits=adc_bits)


@pytest.mark.parametrize("signed", [True, False], ids=["int8", "uint8"])
@pytest.mark.parametrize(
    ("weight_bits", "cell_bits", "dac_bits"),
    [(8, 2, 1), (4, 1, 2), (8, 3, 2), (8, 8, 4), (6, 4, 3), (8, 1, 8)],
)
def test_bit_sliced_mvm_with_ideal_adc_is_the_exact_dot_product(
    signed: bool, weight_bits: int, cell_bits: int, dac_bits: int
) -> None:
    rng = np.random.default_rng(weight_bits * 100 + cell_bits * 10 + dac_bits)
    low = -(1 << (weight_bits - 1))
    w = rng.integers(low, -low, size=(64, 24))
    w[0, :] = low  # the extremes of the weight range
    w[1, :] = -low - 1
    x = _inputs(rng, signed, (20, 64))
    x[0, :] = -128 if signed else 255
    digits = program_group(w, weight_bits, cell_bits)
    assert digits.shape[0] == -(-weight_bits // cell_bits)
    assert digits.max() < 1 << cell_bits
    expected = x.astype(np.int64) @ w
    np.testing.assert_array_equal(_bit_level(x, digits, weight_bits, cell_bits, dac_bits), expected)
    np.testing.assert_array_equal(mvm_exact(x, group_weights(digits, weight_bits, cell_bits)),
                                  expected)


def test_signed_inputs_stream_the_sign_step_with_negative_weight() -> None:
    x = np.array([[-128, -1, 5, 127]], dtype=np.int8)
    digits = input_digits(x, 8, signed=True, dac_bits=1)
    assert digits.shape == (8, 1, 4)
    weights = 1 << np.arange(8)
    np.testing.assert_array_equal(np.einsum("tbr,t->br", digits, weights), x)
    assert list(digits[-1, 0]) == [-1, -1, 0, 0]  # the sign step: weight -2^7 per set bit


def test_exact_shortcut_equals_bit_level_path_on_128x128_batch() -> None:
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, size=(128, 128))
    digits = program_group(w, 8, 2)
    for signed in (True, False):
        x = _inputs(rng, signed, (300, 128))
        np.testing.assert_array_equal(
            mvm_exact(x, group_weights(digits, 8, 2)), _bit_level(x, digits, 8, 2, 1))


def test_adc_clipping_reduces_accuracy_as_bits_shrink() -> None:
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, size=(128, 32))
    digits = program_group(w, 8, 2)
    x = _inputs(rng, True, (200, 128))
    exact = x.astype(np.int64) @ w
    # The largest partial sum is 128 rows x 1-bit digit x level 3 = 384 < 2^9.
    np.testing.assert_array_equal(_bit_level(x, digits, 8, 2, 1, adc_bits=9), exact)
    errors = [np.abs(_bit_level(x, digits, 8, 2, 1, adc_bits=b) - exact).mean()
              for b in (8, 7, 6, 5, 4)]
    assert errors[1] > 0
    assert errors == sorted(errors)
    assert errors[-1] > 10 * errors[1]


def test_cell_noise_is_reproducible_by_seed_and_grows_with_sigma() -> None:
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, size=(64, 16))
    digits = program_group(w, 8, 2)
    cells = digits.reshape(1, 4 * 64, 16)  # stand-in cell array of one core
    x = _inputs(rng, False, (100, 64))
    exact = x.astype(np.int64) @ w

    def run(sigma: float, seed: int) -> np.ndarray:
        planes = conductance(cells, Analog(noise_sigma=sigma, seed=seed), core=0)
        return _bit_level(x, digits, 8, 2, 1, planes=planes.reshape(4, 64, 16))

    np.testing.assert_array_equal(run(0.2, seed=1), run(0.2, seed=1))
    assert not np.array_equal(run(0.2, seed=1), run(0.2, seed=2))
    errors = [np.abs(run(sigma, seed=1) - exact).mean() for sigma in (0.0, 0.05, 0.2, 0.5)]
    assert errors[0] == 0
    assert errors == sorted(errors) and errors[-1] > errors[1]


def test_noise_differs_per_core_but_is_fixed_per_seed() -> None:
    cells = np.ones((1, 4, 4), dtype=np.uint8)
    a = conductance(cells, Analog(noise_sigma=0.1, seed=9), core=0)
    b = conductance(cells, Analog(noise_sigma=0.1, seed=9), core=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, conductance(cells, Analog(noise_sigma=0.1, seed=9), core=0))


@settings(max_examples=60, deadline=None)
@given(
    weight_bits=st.integers(2, 9), cell_bits=st.integers(1, 4), dac_bits=st.integers(1, 8),
    signed=st.booleans(), rows=st.integers(1, 40), cols=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_any_slicing_and_dac_width_gives_the_exact_product(
    weight_bits: int, cell_bits: int, dac_bits: int, signed: bool, rows: int, cols: int,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    half = 1 << (weight_bits - 1)
    w = rng.integers(-half, half, size=(rows, cols))
    x = _inputs(rng, signed, (5, rows))
    digits = program_group(w, weight_bits, cell_bits)
    np.testing.assert_array_equal(_bit_level(x, digits, weight_bits, cell_bits, dac_bits),
                                  x.astype(np.int64) @ w)


# Noise-free cases run with `integral` too: two slices then share a column of one matrix
# product when their sums fit float32 (dac 1 and 3 here; dac 4 on 2-bit cells does not);
# 700 inputs span three chunks of the batch. (Noisy sums are formed in float32, which
# may round a sum near a half the other way from this float64 definition: few inputs.)
@pytest.mark.parametrize(("sigma", "adc_bits", "dac_bits", "signed"),
                         [(0.3, 6, 1, True), (0.1, None, 2, False), (0.0, 5, 3, True),
                          (0.0, 8, 1, True), (0.0, None, 1, False), (0.0, 7, 4, True),
                          (0.0, 4, 3, False)])
def test_bit_level_path_is_each_partial_sum_digitized_then_shifted_and_added(
        sigma: float, adc_bits: int | None, dac_bits: int, signed: bool) -> None:
    """The one-product implementation against the definition spelled out one (step, slice)
    at a time: round, clip, shift, add, minus the offset-binary bias."""
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, size=(96, 24))
    w[:, 0] = 127  # a column of the largest levels: the largest partial sums
    digits = program_group(w, 8, 2)
    planes = conductance(digits, Analog(noise_sigma=sigma, seed=3), core=0)
    batch = 700 if sigma == 0 else 7
    x = _inputs(rng, signed, (batch, 96))
    x[0] = -1 if signed else 255  # every digit its largest
    steps = input_digits(x, 8, signed, dac_bits)
    expected = np.zeros((batch, 24), dtype=np.int64)
    for t in range(len(steps)):
        for s in range(len(planes)):
            partial = np.rint(steps[t].astype(np.float64) @ planes[s])
            if adc_bits is not None:
                top = (1 << adc_bits) - 1
                low = -top if signed and t == len(steps) - 1 else 0
                partial = np.clip(partial, low, top)
            expected += partial.astype(np.int64) << (t * dac_bits + 2 * s)
    expected -= x.astype(np.int64).sum(axis=1, keepdims=True) << 7
    for integral in {False, sigma == 0}:
        np.testing.assert_array_equal(
            mvm_bit_level(x, planes, weight_bits=8, cell_bits=2, input_bits=8, signed=signed,
                          dac_bits=dac_bits, adc_bits=adc_bits, integral=integral),
            expected)


@pytest.mark.parametrize("cell_bits", [1, 2, 4])
@pytest.mark.parametrize("dac_bits", [1, 2, 3, 4])
def test_paired_slices_come_apart_exactly_at_their_extremes(cell_bits: int,
                                                            dac_bits: int) -> None:
    """Two partial sums packed as s0 + B x s1 in float32 come apart exactly for every
    pair of extremes (+-m, +-(m - 1), 0) whenever _pair_base offers a B."""
    largest = (1 << cell_bits) - 1
    offered = 0
    for rows in (1, 16, 64, 128, 256, 512, 1024):
        planes = np.full((2, rows, 1), float(largest))
        base = _pair_base(planes, rows, dac_bits)
        if not base:
            continue
        offered += 1
        m = rows * ((1 << dac_bits) - 1) * largest
        extremes = np.array([-m, 1 - m, 0, m - 1, m], np.float64)
        s0, s1 = (a.ravel() for a in np.meshgrid(extremes, extremes))
        packed64 = s0 + base * s1
        packed = packed64.astype(np.float32)
        assert np.array_equal(packed.astype(np.float64), packed64)  # exact in float32
        packed = packed[None, :]
        even, odd = _paired_partial_sums(packed, base, np.empty_like(packed),
                                         np.empty_like(packed))
        np.testing.assert_array_equal(even[0], s0)
        np.testing.assert_array_equal(odd[0], s1)
    assert offered  # at least the one-row crossbar pairs its slices
