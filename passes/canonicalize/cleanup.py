"""canonicalize rewrites of what ONNX import leaves with a simpler form: identities,
n-ary sums, reshapes, identity transposes, means over H and W, quantized constants.
"""

from __future__ import annotations

import numpy as np

from cimc.ir.module import Module, Op, TensorType
from cimc.ir.shapes import spatial_axes
from cimc.passes.canonicalize.edits import bypass, float_constant, new_op
from cimc.reference.integer import dequantize_values, quantize_values


def drop_identity(module: Module, op: Op) -> bool:
    return bypass(module, op)


def sum_to_adds(module: Module, op: Op) -> bool:
    if len(op.inputs) == 1:
        return bypass(module, op)
    partial = op.inputs[0]
    for operand in op.inputs[1:-1]:
        shape = np.broadcast_shapes(module.values[partial].shape, module.values[operand].shape)
        ty = TensorType(tuple(shape), module.values[op.outputs[0]].dtype)
        partial = new_op(module, "add", [partial, operand], ty, f"{op.name}_partial")
    op.kind = "add"
    module.set_inputs(op, [partial, op.inputs[-1]])
    return True


def concrete_reshape(module: Module, op: Op) -> bool:
    shape = list(module.values[op.outputs[0]].shape)
    if module.values[op.inputs[0]].shape == tuple(shape):
        return bypass(module, op)
    producer = module.producer(op.inputs[0])
    if producer is not None and producer.kind == "reshape":
        module.set_inputs(op, [producer.inputs[0]])
        return True
    if op.attrs.get("shape") != shape:
        op.attrs["shape"] = shape
        return True
    return False


def drop_identity_transpose(module: Module, op: Op) -> bool:
    perm = list(op.attrs.get("perm", []))
    return perm == sorted(perm) and bypass(module, op)


def global_mean(module: Module, op: Op) -> bool:
    """A mean over H and W of [N, C, H, W] (or over the one of them longer than 1: a 1-D
    signal's L) is a global average pool."""
    ty = module.values[op.inputs[0]]
    if len(ty.shape) != 4 or not spatial_axes(ty.shape, op.attrs.get("axes", [])):
        return False
    if op.attrs.get("keepdims", 1):
        op.kind, op.attrs = "global_avg_pool", {}
        return True
    pooled = new_op(module, "global_avg_pool", [op.inputs[0]],
                    TensorType(ty.shape[:2] + (1, 1), ty.dtype), f"{op.name}_pool")
    op.kind, op.attrs = "reshape", {"shape": list(ty.shape[:2])}
    module.set_inputs(op, [pooled])
    return True


def quantize_constant(module: Module, op: Op) -> bool:
    """A QuantizeLinear of a float constant, or of a dequantized integer one, is the
    constant of its codes, as the reference computes them (onnxruntime quantizes a weight
    so when it has no shapes to make it an integer initializer, or when the exporter
    shares one initializer between two LayerNorms' gammas through an Identity)."""
    data = float_constant(module, op.inputs[0])
    producer = module.producer(op.inputs[0])
    if data is None and producer is not None and producer.kind == "dequantize" \
            and module.is_constant(producer.inputs[0]):
        inner = producer.inputs[0]
        data = dequantize_values(module.constants[inner], module.values[inner])
    result = op.outputs[0]
    if data is None or result in module.outputs:
        return False
    ty = module.values[result]
    codes = module.add_constant(module.fresh_name(f"{result}_codes"),
                                quantize_values(data, ty), ty.quant)
    module.replace_uses(result, codes)
    module.remove_op(op)
    return True
