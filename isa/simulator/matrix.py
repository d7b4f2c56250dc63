"""Semantics of `mvm`: a crossbar group's matrix-vector product on local memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isa.image import CrossbarGroup, group_weights
from isa.simulator.crossbar import Analog, exact_weights, mvm_bit_level, mvm_exact
from isa.simulator.registry import semantic
from isa.simulator.vector import fit

INPUT_BITS = 8  # mvm inputs are i8 or u8 codes


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

    def __post_init__(self) -> None:
        signed = group_weights(self.digits, self.group.weight_bits, self.cell_bits)
        self.weights = exact_weights(signed, INPUT_BITS)

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
    state: GroupState = core.groups[o[0]]
    regs = core.regs
    x = core.memory.load(regs[o[3]] + o[4], state.group.rows_used, t)
    y = state.multiply(x, t == "i8")
    dst = regs[o[1]] + o[2]
    if accumulate:
        y = y + core.memory.load(dst, state.group.cols_used, "i32")
    core.memory.store(dst, fit(y, "i32"), "i32")


@semantic("mvm", "g dst src")
def mvm(core: Any, o: tuple[int, ...], t: str) -> None:
    _mvm(core, o, t, accumulate=False)


@semantic("mvm.acc", "g dst src")
def mvm_acc(core: Any, o: tuple[int, ...], t: str) -> None:
    _mvm(core, o, t, accumulate=True)
