"""Semantics of `mvm`: a crossbar group's matrix-vector product on local memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.isa.image import CrossbarGroup, group_weights
from cimc.isa.simulator.crossbar import Analog, exact_weights, mvm_bit_level, mvm_exact
from cimc.isa.simulator.registry import semantic

INPUT_BITS = 8  # mvm inputs are i8 or u8 codes
_I32 = np.dtype("<i4")  # results as memory holds them (memory.ELEMENT_DTYPES["i32"])


@dataclass
class GroupState:
    """A programmed crossbar group as the simulator uses it."""

    group: CrossbarGroup
    digits: np.ndarray  # uint8 [S, rows_used, cols_used], the stored cell levels
    planes: np.ndarray  # float64 conductances of the same cells (levels + noise)
    cell_bits: int
    dac_bits: int
    analog: Analog
    bit_level: bool  # use the bit-level path even when the ADC is ideal
    weights: np.ndarray = field(init=False)  # W [rows_used, cols_used], exact_weights dtype
    crossbars: tuple[int, ...] = field(init=False)  # the crossbars an MVM keeps busy

    def __post_init__(self) -> None:
        self.crossbars = self.group.crossbars()
        signed = group_weights(self.digits, self.group.weight_bits, self.cell_bits)
        self.weights = exact_weights(signed, INPUT_BITS)

    def multiply_i32(self, x: np.ndarray, signed: bool) -> np.ndarray:
        """multiply() as the i32 the mvm stores (wrapped modulo 2^32, like vector.fit)."""
        if self.analog.ideal and not self.bit_level:
            product = x.astype(self.weights.dtype) @ self.weights
            if self.weights.dtype == np.float32:  # |product| < 2^24 (exact_weights): fits
                return product.astype(_I32)
            return product.astype(np.int64).astype(_I32)
        return self.multiply(x, signed).astype(_I32)

    def multiply(self, x: np.ndarray, signed: bool) -> np.ndarray:
        """x [batch, rows_used] . W -> int64 [batch, cols_used] as the crossbar computes it."""
        if self.analog.ideal and not self.bit_level:
            return mvm_exact(x, self.weights)
        return mvm_bit_level(
            x,
            self.planes,
            weight_bits=self.group.weight_bits,
            cell_bits=self.cell_bits,
            input_bits=INPUT_BITS,
            signed=signed,
            dac_bits=self.dac_bits,
            adc_bits=self.analog.adc_bits,
        )


def _mvm(core: Any, o: tuple[int, ...], t: str, accumulate: bool) -> None:
    """The product now (values are exact at once); its time: the MVM starts when the core
    issues it, its input is ready and its crossbars are free; it keeps them busy for the
    MVM time, and its result counts as in flight until then (docs/simulator.md)."""
    state: GroupState = core.groups[o[0]]
    regs, memory = core.regs, core.memory
    x = memory.load(regs[o[3]] + o[4], state.group.rows_used, t)  # may wait for an input
    y = state.multiply_i32(x, t == "i8")
    dst = regs[o[1]] + o[2]
    nbytes = 4 * state.group.cols_used
    # Accumulating into a result in flight is the crossbar's adder's business: no wait.
    pending, memory.pending = memory.pending, []
    if accumulate:  # i32 addition wraps modulo 2^32 as the int64 sum cast to i32 would
        y += memory.load(dst, state.group.cols_used, "i32")
    memory.write(dst, y.view(np.uint8))
    free = core.crossbar_free
    start = core.clock
    if memory.stall > start:
        start = memory.stall
    for xbar in state.crossbars:
        busy = free.get(xbar, 0)
        if busy > start:
            start = busy
    xbars = state.crossbars
    ready = start + core.costs[core.pc].cycles
    for xbar in xbars:
        free[xbar] = ready
    memory.pending = [p for p in pending if p[2] > start]
    memory.pending.append((dst, dst + nbytes, ready))
    memory.stall = start  # the core issues in order: it waits until the MVM can start


@semantic("mvm", "g dst src")
def mvm(core: Any, o: tuple[int, ...], t: str) -> None:
    _mvm(core, o, t, accumulate=False)


@semantic("mvm.acc", "g dst src")
def mvm_acc(core: Any, o: tuple[int, ...], t: str) -> None:
    _mvm(core, o, t, accumulate=True)
