"""Attention's heads: the part of `lower` that hands the chip's `dot` and `pixel_softmax`
one token matrix at a time.

Multi-head attention as torch exports it (nn.MultiheadAttention and
nn.TransformerEncoderLayer; also several sequences of one head) multiplies tensors with
leading axes: [1, heads, T, d] from the dynamo exporter, [heads, T, d] from the legacy
one. The chip's `dot` multiplies two token matrices [1,M,K] x [1,K,N] and its
`pixel_softmax` normalizes each token of one, so:

* a quantized matmul of two runtime tensors whose leading axes hold P > 1 matrices (or
  whose rank is above 3) becomes P matmuls of [1,M,K] x [1,K,N], one per index of the
  result's leading axes: each operand is read as [P', M, K] through a reshape and the
  matrix it broadcasts to that index through a take; the products are joined by a
  concat on axis 0 and a reshape to the result's shape;
* a quantized softmax over the last axis of such a tensor reads it as [1, R, N] tokens
  through a reshape (a softmax of each row does not care which rows are its neighbours)
  and gives the shape back through another; over another axis (attention pooling's
  weights over time, [1,T,1] over axis 1) it reads the tensor through a transpose that
  makes that axis the last, and transposes the result back.

Reshapes, takes and concats move codes and nothing else, so the module computes what it
did; `lower_layout` then fuses each chain of them into one `gather`.
"""

from __future__ import annotations

import math

import numpy as np

from cimc.ir.module import Module, Op, TensorType


def split_heads(module: Module) -> None:
    """Every batched matmul and softmax of `module` one token matrix at a time (module
    docstring)."""
    for op in list(module.ops()):
        if op.kind == "matmul" and _batched_product(module, op):
            _split_matmul(module, op)
        elif op.kind == "softmax" and _batched_rows(module, op):
            _flatten_softmax(module, op)


def _canonical(shape: tuple[int, ...]) -> bool:
    """[M, N] or [1, M, N]: the token matrices the chip's ops read."""
    return len(shape) == 2 or (len(shape) == 3 and shape[0] == 1)


def _batched_product(module: Module, op: Op) -> bool:
    y_type = module.values[op.outputs[0]]
    return (y_type.is_quantized and len(op.inputs) == 2
            and not any(module.is_constant(v) for v in op.inputs)
            and all(len(module.values[v].shape) >= 2 for v in op.inputs)
            and not _canonical(tuple(y_type.shape)))


def _batched_rows(module: Module, op: Op) -> bool:
    shape = tuple(module.values[op.inputs[0]].shape)
    axis = int(op.attrs.get("axis", -1)) % max(len(shape), 1)
    return (module.values[op.outputs[0]].is_quantized and len(shape) >= 3
            and (axis != len(shape) - 1 or not _canonical(shape)))


def _add(module: Module, op: Op, kind: str, inputs: list[str], ty: TensorType, shape: tuple,
         attrs: dict | None = None) -> str:
    return module.add_op(kind, inputs, [ty.with_shape(list(shape))], name=f"{op.name}.{kind}",
                         attrs=attrs).outputs[0]


def _reshaped(module: Module, op: Op, value: str, shape: tuple[int, ...]) -> str:
    ty = module.values[value]
    if tuple(ty.shape) == shape:
        return value
    return _add(module, op, "reshape", [value], ty, shape, {"shape": list(shape)})


def _matrix(module: Module, op: Op, stacked: str, count: int, index: int) -> str:
    """Matrix `index` of `stacked` [count, M, K] as [1, M, K]."""
    ty = module.values[stacked]
    if count == 1:
        return stacked
    return _add(module, op, "take", [stacked], ty, (1, *ty.shape[1:]),
                {"axes": [0], "index": [index]})


def _split_matmul(module: Module, op: Op) -> None:
    y = op.outputs[0]
    y_type = module.values[y]
    leading = tuple(y_type.shape[:-2])
    count = math.prod(leading)
    operands = []
    for value in op.inputs:
        shape = tuple(module.values[value].shape)
        # Right-aligned broadcasting of the operand's leading axes to the result's.
        own = (1,) * (len(leading) - len(shape) + 2) + shape[:-2]
        stacked = _reshaped(module, op, value, (math.prod(own), *shape[-2:]))
        operands.append((stacked, own))
    products = []
    for p in range(count):
        where = np.unravel_index(p, leading)
        matrices = [_matrix(module, op, stacked, math.prod(own),
                            int(np.ravel_multi_index([c if n > 1 else 0
                                                      for c, n in zip(where, own, strict=True)],
                                                     own)))
                    for stacked, own in operands]
        products.append(_add(module, op, "matmul", matrices, y_type,
                             (1, *y_type.shape[-2:]), dict(op.attrs)))
    joined = products[0] if count == 1 else _add(module, op, "concat", products, y_type,
                                                 (count, *y_type.shape[-2:]), {"axis": 0})
    _rebind(module, op, _reshaped(module, op, joined, tuple(y_type.shape)))


def _flatten_softmax(module: Module, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    shape = tuple(module.values[x].shape)
    axis = int(op.attrs.get("axis", -1)) % len(shape)
    perm = [*(a for a in range(len(shape)) if a != axis), axis]
    if axis != len(shape) - 1:
        x = _add(module, op, "transpose", [x], module.values[x],
                 tuple(shape[a] for a in perm), {"perm": perm})
    moved = tuple(module.values[x].shape)
    rows = (1, math.prod(moved[:-1]), moved[-1])
    y_type = module.values[y]
    normalized = _add(module, op, "softmax", [_reshaped(module, op, x, rows)], y_type, rows,
                      {**op.attrs, "axis": -1})
    result = _reshaped(module, op, normalized, moved)
    if axis != len(shape) - 1:
        result = _add(module, op, "transpose", [result], y_type, shape,
                      {"perm": [int(a) for a in np.argsort(perm)]})
    _rebind(module, op, result)


def _rebind(module: Module, op: Op, value: str) -> None:
    """`value` in place of `op`'s result, under the result's name (its readers and the
    module's outputs keep it)."""
    result = op.outputs[0]
    module.replace_uses(result, value)
    module.remove_op(op)
    module.rename_value(value, result)
