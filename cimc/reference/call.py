"""What a kernel of the reference interpreter receives: one op with its operand values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Op, TensorType


@dataclass
class Call:
    """One op to evaluate: its operand arrays and the IR types of operands and result.

    The arrays may carry `stretch` times the batch declared by the IR types on
    axis 0 (the interpreter vectorizes over a batch of inputs that way).
    """

    op: Op
    args: list[np.ndarray]
    types: list[TensorType]
    result: TensorType
    stretch: int = 1

    def attr(self, name: str, default: Any = None) -> Any:
        return self.op.attrs.get(name, default)

    def error(self, message: str) -> CimcError:
        return CimcError(f"op {self.op.name!r} ({self.op.kind}): {message}")

    @property
    def quantized(self) -> bool:
        """Whether the integer semantics apply (the result is a quantized integer)."""
        return self.result.quant is not None and self.result.dtype != "f32"

    def result_shape(self, result: TensorType | None = None) -> tuple[int, ...]:
        """The shape of the (first) result's IR type with the batch axis stretched."""
        shape = (result or self.result).shape
        return (shape[0] * self.stretch, *shape[1:]) if shape else shape
