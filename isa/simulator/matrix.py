"""Semantics of `mvm`: a crossbar group's matrix-vector product on local memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.isa.image import CrossbarGroup, group_weights
from cimc.isa.simulator.crossbar import Analog, exact_weights, mvm_bit_level, mvm_exact
from cimc.isa.simulator.registry import semantic
from cimc.isa.simulator.reprogram import not_programmed

INPUT_BITS = 8  # mvm inputs are i8 or u8 codes
_I32 = np.dtype("<i4")  # results as memory holds them (memory.ELEMENT_DTYPES["i32"])


@dataclass
class GroupState:
    """A programmed crossbar group as the simulator uses it."""

    group: CrossbarGroup
    digits: np.ndarray  # uint8 [S, rows_used, cols_used], the stored cell levels
    planes: np.ndarray | None  # float64 conductances of those cells (levels + noise); None:
    # the exact path (ideal crossbars, bit_level off) never reads them
    cell_bits: int
    dac_bits: int
    analog: Analog
    bit_level: bool  # use the bit-level path even when the ADC is ideal
    programmed: bool = True  # its crossbars hold its cells (reprogram.py)
    weights: np.ndarray = field(init=False)  # W [rows_used, cols_used], exact_weights dtype
    crossbars: tuple[int, ...] = field(init=False)  # the crossbars an MVM keeps busy

    rows: int = field(init=False)  # rows_used, cols_used: read by every mvm
    cols: int = field(init=False)
    exact: bool = field(init=False)  # one matrix product gives the crossbars' result:
    # the ADC is ideal, or cannot clip (adc_cannot_clip) and no noise makes sums non-integral
    exact32: bool = field(init=False)  # ... in float32

    def __post_init__(self) -> None:
        self.crossbars = self.group.crossbars()
        signed = group_weights(self.digits, self.group.weight_bits, self.cell_bits)
        self.weights = exact_weights(signed, INPUT_BITS)
        self.rows, self.cols = self.group.rows_used, self.group.cols_used
        analog = self.analog
        self.exact = not self.bit_level and analog.noise_sigma == 0.0 and (
            analog.adc_bits is None
            or adc_cannot_clip(self.digits, self.dac_bits, analog.adc_bits))
        self.exact32 = self.exact and self.weights.dtype == np.float32

    def multiply_i32(self, x: np.ndarray, signed: bool) -> np.ndarray:
        """multiply() as the i32 the mvm stores (wrapped modulo 2^32, like vector.fit)."""
        if self.exact:
            weights = self.weights
            # np.dot: a third less overhead than @ on one input vector; exact either way
            product = np.dot(x.astype(weights.dtype), weights)
            if weights.dtype == np.float32:  # |product| < 2^24 (exact_weights): fits
                return product.astype(_I32)
            return product.astype(np.int64).astype(_I32)
        return self.multiply(x, signed).astype(_I32)

    def multiply(self, x: np.ndarray, signed: bool) -> np.ndarray:
        """x [batch, rows_used] . W -> int64 [batch, cols_used] as the crossbar computes it."""
        if self.exact:
            return mvm_exact(x, self.weights)
        assert self.planes is not None, "conductances are kept for the bit-level path"
        return mvm_bit_level(
            x,
            self.planes,
            weight_bits=self.group.weight_bits,
            cell_bits=self.cell_bits,
            input_bits=INPUT_BITS,
            signed=signed,
            dac_bits=self.dac_bits,
            adc_bits=self.analog.adc_bits,
            integral=self.analog.noise_sigma == 0.0,  # conductances are the levels
        )


def adc_cannot_clip(digits: np.ndarray, dac_bits: int, adc_bits: int) -> bool:
    """No partial sum of these cells can leave the ADC's range, for any input.

    A (step, slice, column) partial sum is an input digit times each cell level, summed
    over the rows: digits lie in [0, 2^dac - 1], or [-2^(dac-1), 2^(dac-1) - 1] on a
    signed top step, so its magnitude is at most (2^dac - 1) x the column's level sum.
    Within 2^adc - 1 nothing is clipped, and without noise every sum is an integer the
    ADC rounds to itself: the bit-level result is then exactly x . W (crossbar.py)."""
    largest = int(digits.sum(axis=1, dtype=np.int64).max(initial=0))
    return ((1 << dac_bits) - 1) * largest <= (1 << adc_bits) - 1


def _mvm(accumulate: bool) -> Any:
    """The semantics of mvm (accumulate: mvm.acc), one function each (one call less per MVM).

    The product now (values are exact at once); its time: the MVM starts when the core
    issues it, its input is ready and its crossbars are free; it keeps them busy for the
    MVM time, and its result counts as in flight until then (docs/simulator.md)."""

    def run(core: Any, o: tuple[int, ...], t: str) -> None:
        state: GroupState = core.groups[o[0]]
        if not state.programmed:
            raise not_programmed(core, o[0])
        regs, memory = core.regs, core.memory
        x = memory.elements(regs[o[3]] + o[4], state.rows, t)  # may wait for an input
        if state.exact32:  # multiply_i32, written out for the common case
            y = np.dot(x.astype(np.float32), state.weights).astype(_I32)
        else:
            y = state.multiply_i32(x, t == "i8")
        dst = regs[o[1]] + o[2]
        memory.put_result(dst, y, accumulate)
        free = core.crossbar_free
        start = core.clock
        if memory.stall > start:
            start = memory.stall
        xbars = state.crossbars
        for xbar in xbars:
            busy = free.get(xbar, 0)
            if busy > start:
                start = busy
        ready = start + core.costs[core.pc].cycles
        for xbar in xbars:
            free[xbar] = ready
        memory.hold(dst, dst + 4 * state.cols, ready, start)
        memory.stall = start  # the core issues in order: it waits until the MVM can start

    return run


semantic("mvm", "g dst src")(_mvm(accumulate=False))
semantic("mvm.acc", "g dst src")(_mvm(accumulate=True))
