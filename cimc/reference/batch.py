"""Running a batch larger than the IR's in one go.

The IR types fix the batch (axis 0 of the inputs). The interpreter accepts
inputs stacked `stretch` times larger on axis 0 and evaluates every op on the
whole stack when that means the same as evaluating each slice alone; when it
might not (an op mixing axis 0, a parameter shaped like the batch), it runs
slice by slice.
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op

# Operands from this index on are parameters (weights, bias, statistics).
PARAMETER_OPERANDS = {"conv": 1, "gemm": 1, "batch_norm": 1, "lstm": 1, "gru": 1, "rnn": 1}


def batch_stretch(module: Module, feeds: dict[str, np.ndarray]) -> int:
    """How many times the IR's batch the feeds hold (checking names and shapes)."""
    missing = [name for name in module.inputs if name not in feeds]
    if missing:
        raise CimcError(f"no value given for input(s) {', '.join(missing)}")
    stretches = []
    for name in module.inputs:
        expected, got = module.values[name].shape, np.shape(feeds[name])
        if got == expected:
            stretches.append(1)
        elif (
            len(got) == len(expected) > 0
            and got[1:] == expected[1:]
            and got[0] > 0
            and expected[0] > 0
            and got[0] % expected[0] == 0
        ):
            stretches.append(got[0] // expected[0])
        else:
            raise CimcError(
                f"input {name!r} has shape {list(got)}, expected {list(expected)}"
                " (or a multiple of it on axis 0 for a larger batch)"
            )
    if len(set(stretches)) > 1:
        raise CimcError("inputs hold different numbers of batches")
    return stretches[0] if stretches else 1


def join_batches(parts: list[np.ndarray]) -> np.ndarray:
    """Results of consecutive runs, stacked on axis 0; a 0-d result (a scalar per
    batch) is one element of the stack."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([np.atleast_1d(part) for part in parts])


def _axis(op: Op, rank: int, default: int) -> int:
    axis = int(op.attrs.get("axis", default))
    return axis + rank if axis < 0 else axis


def batched_values(module: Module) -> set[str]:
    """Values that depend on a module input."""
    batched = set(module.inputs)
    for op in module.ops():
        if any(v in batched for v in op.inputs):
            batched.update(op.outputs)
    return batched


def _op_vectorizes(module: Module, op: Op, batched: set[str], batch: int) -> bool:
    result = module.values[op.outputs[0]]
    rank = len(result.shape)
    if rank == 0 or result.shape[0] != batch:
        return False
    first_parameter = PARAMETER_OPERANDS.get(op.kind, len(op.inputs))
    for i, value in enumerate(op.inputs):
        shape = module.values[value].shape
        if value in batched:
            if not shape or shape[0] != batch:
                return False
        elif i < first_parameter and len(shape) == rank and shape[0] != 1:
            return False  # would not broadcast against a stretched operand
    kind = op.kind
    if kind == "transpose":
        return list(op.attrs.get("perm", range(rank - 1, -1, -1)))[0] == 0
    if kind in ("concat", "softmax", "log_softmax", "layer_norm"):
        return _axis(op, rank, -1) != 0
    if kind == "take":
        return 0 not in op.attrs["axes"]
    if kind == "reduce_mean":
        axes = op.attrs.get("axes")
        return axes is not None and all((a + rank) % rank != 0 for a in axes)
    if kind in ("lstm", "gru", "rnn"):  # time first unless layout 1 puts the batch first
        return bool(op.attrs.get("layout", 0))
    if kind == "resize":  # a stack of samples when axis 0 keeps its size
        return op.attrs["scales"][0] == 1 and op.attrs["sizes"][0] == batch \
            and op.attrs.get("coordinate_transformation_mode") != "tf_crop_and_resize"
    if kind == "matmul":
        return all(len(module.values[v].shape) >= 3 or v not in batched for v in op.inputs[1:])
    return True


def vectorizes(module: Module) -> bool:
    """Whether every op may run on the whole stacked batch at once."""
    batches = {module.values[name].shape[0] for name in module.inputs if module.values[name].shape}
    if len(batches) != 1:
        return False
    batch = batches.pop()
    batched = batched_values(module)
    ops = [op for op in module.ops() if op.outputs[0] in batched]
    return all(_op_vectorizes(module, op, batched, batch) for op in ops)
