"""requant on the simulator: per-channel tables, reused and rewritten, against the reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from cimc.diagnostics import CimcError
from cimc.isa.assembler import assemble_text
from cimc.isa.simulator import SimOptions, run_program
from cimc.reference import requant
from cimc.targets import load_target

TINY = load_target("tiny")
RNG = np.random.default_rng(7)


def _words(rows: np.ndarray) -> str:
    return "\n".join(".word " + ", ".join(str(int(v)) for v in row) for row in rows)


def _expected(acc: np.ndarray, table: np.ndarray, element: str) -> np.ndarray:
    mult, shift, zp, lo, hi = table.T
    scaled = requant.apply(acc, mult, shift) + zp
    dtype = np.dtype(np.int8 if element == "i8" else np.uint8)
    info = np.iinfo(dtype)
    return np.minimum(np.maximum(np.clip(scaled, info.min, info.max), lo), hi).astype(dtype)


@pytest.mark.parametrize("element", ["i8", "u8"])
def test_a_table_rewritten_between_two_requants_is_read_again(element: str) -> None:
    """The second requant at the same table address sees the bytes `copy` wrote there."""
    first = np.stack([RNG.integers(1 << 30, 1 << 31, 6), [0, 1, 31, 40, 62, 9],
                      RNG.integers(-50, 50, 6), [-100, -128, 5, -2**31, 0, 3],
                      [100, 127, 4, 2**31 - 1, 255, 90]], axis=1)
    second = first.copy()
    second[:, 1] = [20, 33, 0, 7, 50, 35]
    second[:, 2] = -second[:, 2]
    acc = RNG.integers(-2**31, 2**31, size=(4, 6))
    source = f"""
.input acc, 0, i32, [6], 1.0, 0
.output y1, 0x200, {element}, [6], 1.0, 0
.output y2, 0x300, {element}, [6], 1.0, 0
.core 0
.data 0x800
{_words(first)}
.data 0x900
{_words(second)}
    ld 0(r0), 0(r0), 24
    requant.{element} 64(r0), 0(r0), 6, 0x800(r0)
    st 0x200(r0), 64(r0), 6
    copy 0x800(r0), 0x900(r0), 120, 1, 0, 0
    requant.{element} 64(r0), 0(r0), 6, 0x800(r0)
    st 0x300(r0), 64(r0), 6
"""
    outputs, _ = run_program(assemble_text(source, "prog.s"), None, TINY,
                             {"acc": acc.astype(np.int32)}, SimOptions())
    np.testing.assert_array_equal(outputs["y1"], _expected(acc, first, element))
    np.testing.assert_array_equal(outputs["y2"], _expected(acc, second, element))


def test_a_shift_out_of_range_is_an_error_at_the_requant_line() -> None:
    source = """
.core 0
.data 0x800
.word 1073741824, 63, 0, -128, 127
    requant.i8 64(r0), 0(r0), 1, 0x800(r0)
"""
    with pytest.raises(CimcError, match=r"prog.s:5.*shift outside 0\.\.62"):
        run_program(assemble_text(source, "prog.s"), None, TINY, {}, SimOptions())


def test_rounding_shifter_rounds_half_to_even_as_rounding_shift_does() -> None:
    shift = np.array([0, 1, 2, 5, 31, 40, 61, 62] * 4)
    edge = [1 << 62, -(1 << 62), 0, 1, -1, 3, -3, 5]
    odd = [(2 * k + 1) << max(int(s) - 1, 0) for k, s in zip(range(-16, 16), shift, strict=True)]
    halves = [h if abs(h) <= 1 << 62 else 1 << 61 for h in odd]  # |acc * M| <= 2^62
    value = np.array([edge * 4, halves, RNG.integers(-(1 << 62), 1 << 62, 32)], dtype=np.int64)
    got = requant.rounding_shifter(shift)(value)
    np.testing.assert_array_equal(got, requant.rounding_shift(value, shift))
    for v, s, g in zip(value.ravel(), np.tile(shift, 3), got.ravel(), strict=True):
        assert g == round(Fraction(int(v), 1 << int(s)))  # Python rounds half to even
