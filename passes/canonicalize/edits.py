"""Queries and edits the canonicalize rewrites share: constants, readers, new ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from cimc.ir.module import Module, Op, Quant, TensorType


def float_constant(module: Module, value: str) -> np.ndarray[Any, Any] | None:
    """The data of `value` if it is a plain (not quantized) float constant."""
    if module.is_constant(value) and module.values[value].dtype == "f32":
        if module.values[value].quant is None:
            return module.constants[value]
    return None


def sole_reader(module: Module, value: str) -> bool:
    return value not in module.outputs and len(module.consumers(value)) == 1


def new_constant(module: Module, base: str, data: np.ndarray[Any, Any],
                 quant: Quant | None = None) -> str:
    return module.add_constant(module.fresh_name(base), data, quant)


def new_op(module: Module, kind: str, inputs: list[str], ty: TensorType, name: str,
           attrs: dict[str, Any] | None = None) -> str:
    """Add an op with one fresh result; return the result's name."""
    name = module.fresh_name(name)
    op = module.add_op(kind, inputs, [ty], name=name, outputs=[module.fresh_name(f"{name}_out")],
                       attrs=attrs)
    return op.outputs[0]


def bypass(module: Module, op: Op, value: str | None = None) -> bool:
    """Let readers of `op`'s result read `value` (default its first operand); drop `op`.
    A model output keeps its name: `value` takes it, unless `value` is a model input,
    constant or output itself, and then `op` stays."""
    result, value = op.outputs[0], value or op.inputs[0]
    named = result in module.outputs
    if named and (module.producer(value) is None or value in module.outputs):
        return False
    module.replace_uses(result, value)
    module.remove_op(op)
    if named:
        module.rename_value(value, result)
    return True


def split_constant(module: Module, op: Op) -> tuple[str, np.ndarray[Any, Any]] | None:
    """(runtime operand, constant data) of a binary op with one float constant operand."""
    a, b = op.inputs
    if float_constant(module, b) is not None and float_constant(module, a) is None:
        return a, module.constants[b]
    if op.kind != "sub" and float_constant(module, a) is not None \
            and float_constant(module, b) is None:
        return b, module.constants[a]
    return None
