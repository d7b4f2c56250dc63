"""canonicalize rewrites of per-channel affine maps: batch norms, and float `mul`/`add`
by constants folded into the conv or gemm before them or merged into one mul and one add.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cimc.ir.module import Module, Op, TensorType
from cimc.passes.canonicalize.edits import (
    bypass,
    float_constant,
    new_constant,
    new_op,
    sole_reader,
    split_constant,
)

Array = np.ndarray[Any, Any]


def channel_vector(data: Array, shape: tuple[int, ...]) -> Array | None:
    """`data` as one value per channel (axis 1) if, broadcast to `shape`, it varies only there."""
    if len(shape) < 2 or data.ndim > len(shape):
        return None
    full = data.reshape((1,) * (len(shape) - data.ndim) + data.shape)
    if any(d != 1 for i, d in enumerate(full.shape) if i != 1):
        return None
    if full.shape[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(full.reshape(-1), (shape[1],)).astype(np.float64)


def channel_shaped(vector: np.ndarray[Any, Any], rank: int) -> np.ndarray[Any, Any]:
    """A per-channel vector shaped to broadcast along axis 1 of a rank-`rank` tensor."""
    return vector.astype(np.float32).reshape((-1,) + (1,) * (rank - 2))


def fold_target(module: Module, value: str) -> Op | None:
    """The float conv/gemm defining `value` if a per-channel affine map can fold into it."""
    op = module.producer(value)
    if op is None or op.kind not in ("conv", "gemm") or op.attrs.get("clamp") is not None:
        return None
    if op.kind == "gemm" and set(op.attrs) & {"trans_a", "trans_b", "alpha", "beta"}:
        return None
    if not sole_reader(module, value) or float_constant(module, op.inputs[1]) is None:
        return None
    if len(op.inputs) > 2 and float_constant(module, op.inputs[2]) is None:
        return None
    return op


def fold_affine(module: Module, target: Op, scale: np.ndarray[Any, Any] | None,
                shift: np.ndarray[Any, Any] | None) -> None:
    """Make `target` (a fold_target) compute `result * scale + shift` per output channel."""
    weight = module.constants[target.inputs[1]].astype(np.float64)
    channels = weight.shape[0]
    bias = (module.constants[target.inputs[2]].astype(np.float64) if len(target.inputs) > 2
            else np.zeros(channels))
    if scale is not None:
        weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        bias = bias * scale
    if shift is not None:
        bias = bias + shift
    w = new_constant(module, f"{target.name}_w", weight.astype(np.float32))
    b = new_constant(module, f"{target.name}_b", bias.astype(np.float32))
    module.set_inputs(target, [target.inputs[0], w, b])


def fold_batch_norm(module: Module, op: Op) -> bool:
    x, *params = op.inputs
    data = [float_constant(module, p) for p in params]
    if any(d is None for d in data):
        return False
    gamma, beta, mean, var = (np.asarray(d, dtype=np.float64) for d in data)
    scale = gamma / np.sqrt(var + float(op.attrs.get("epsilon", 1e-5)))
    shift = beta - mean * scale
    target = fold_target(module, x)
    if target is not None:
        fold_affine(module, target, scale, shift)
        return bypass(module, op)
    # No conv before it: the same per-channel scale and shift as mul + add.
    rank, ty = len(module.values[x].shape), module.values[op.outputs[0]]
    k = new_constant(module, f"{op.name}_scale", channel_shaped(scale, rank))
    scaled = new_op(module, "mul", [x, k], ty, f"{op.name}_mul")
    shift_value = new_constant(module, f"{op.name}_shift", channel_shaped(shift, rank))
    op.kind, op.attrs = "add", {}
    module.set_inputs(op, [scaled, shift_value])
    return True


def fold_channel_mul(module: Module, op: Op) -> bool:
    return _fold_channel(module, op, "mul")


def fold_channel_add(module: Module, op: Op) -> bool:
    return _fold_channel(module, op, "add")


def _fold_channel(module: Module, op: Op, kind: str) -> bool:
    split = split_constant(module, op)
    if split is None:
        return False
    x, data = split
    shape = module.values[op.outputs[0]].shape
    vector = channel_vector(data, shape)
    target = fold_target(module, x)
    if vector is None or target is None or module.values[x].shape != shape:
        return False
    if kind == "mul":
        fold_affine(module, target, vector, None)
    else:
        fold_affine(module, target, None, vector)
    return bypass(module, op, x)


def sub_to_add(module: Module, op: Op) -> bool:
    split = split_constant(module, op)
    if split is None:
        return False
    x, data = split
    op.kind = "add"
    module.set_inputs(op, [x, new_constant(module, f"{op.name}_neg", -data)])
    return True


def merge_affine_chain(module: Module, op: Op) -> bool:
    """mul(mul(x,a),b) -> mul(x,a*b); add(add(x,a),b) -> add(x,a+b);
    mul(add(x,a),b) -> add(mul(x,b),a*b), so chains shrink to one mul and one add."""
    split = split_constant(module, op)
    if split is None:
        return False
    inner_value, b = split
    inner = module.producer(inner_value)
    if inner is None or inner.kind not in ("mul", "add") or not sole_reader(module, inner_value):
        return False
    inner_split = split_constant(module, inner)
    if inner_split is None or (op.kind, inner.kind) == ("add", "mul"):
        return False
    x, a = inner_split
    if inner.kind == op.kind:
        merged = a * b if op.kind == "mul" else a + b
        module.set_inputs(op, [x, new_constant(module, f"{op.name}_c", merged.astype(np.float32))])
        return True
    shape = np.broadcast_shapes(module.values[x].shape, b.shape)
    ty = TensorType(tuple(shape), module.values[op.outputs[0]].dtype)
    scaled = new_op(module, "mul", [x, new_constant(module, f"{op.name}_c", b)], ty,
                    f"{op.name}_mul")
    op.kind = "add"
    shift = new_constant(module, f"{op.name}_shift", (a * b).astype(np.float32))
    module.set_inputs(op, [scaled, shift])
    return True
