"""canonicalize rewrites to the IR's gemm: ONNX Gemm's transposes and scales
normalized away, matmul by a constant (or dequantized constant) matrix as gemm.
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op, Quant
from cimc.passes.canonicalize.affine import channel_vector
from cimc.passes.canonicalize.edits import float_constant, new_constant, new_op


def transposed_weight(module: Module, value: str, name: str) -> str:
    """`value` [K,N] as [N,K]: constants (integer ones keep their Quant, axis moved) are
    transposed in place of a transpose op, also under a dequantize."""
    ty = module.values[value]
    producer = module.producer(value)
    if module.is_constant(value):
        quant = ty.quant
        if quant is not None and quant.axis is not None:
            quant = Quant(quant.scale, quant.zero_point, 1 - quant.axis)
        return new_constant(module, f"{value}_t", module.constants[value].T.copy(), quant)
    if producer is not None and producer.kind == "dequantize" \
            and module.is_constant(producer.inputs[0]):
        inner = transposed_weight(module, producer.inputs[0], name)
        return new_op(module, "dequantize", [inner], ty.with_shape(ty.shape[::-1]),
                      f"{producer.name}_t")
    return new_op(module, "transpose", [value], ty.with_shape(ty.shape[::-1]), f"{name}_wt",
                  {"perm": [1, 0]})


def normalize_gemm(module: Module, op: Op) -> bool:
    """gemm {trans_a, trans_b, alpha, beta}(a, b, c) -> gemm(x, w[N,K], bias[N])."""
    out = module.values[op.outputs[0]]
    x, w, *rest = op.inputs
    bias = rest[0] if rest else None
    bias_ok = bias is None or module.values[bias].shape == (out.shape[1],)
    if not set(op.attrs) & {"trans_a", "trans_b", "alpha", "beta"} and bias_ok:
        return False
    attrs = dict(op.attrs)
    if attrs.pop("trans_a", 0):
        ty = module.values[x]
        x = new_op(module, "transpose", [x], ty.with_shape(ty.shape[::-1]), f"{op.name}_xt",
                   {"perm": [1, 0]})
    if attrs.pop("trans_b", 1) == 0:
        w = transposed_weight(module, w, op.name)
    alpha, beta = float(attrs.pop("alpha", 1.0)), float(attrs.pop("beta", 1.0))
    for key, value in (("alpha", alpha), ("beta", beta)):
        if not np.isfinite(np.float32(value)):
            raise CimcError(f"op {op.name!r} (gemm): {key}={value} is not a finite float32 "
                            f"number, so every result would be infinite or NaN; correct the "
                            f"Gemm's {key} in the model")
    if alpha == 0.0:
        raise CimcError(f"op {op.name!r} (gemm): alpha=0 multiplies the weights by zero, so "
                        "the result is beta x C whatever the input; correct the Gemm's alpha "
                        "or replace the Gemm by its constant result")
    if alpha != 1.0:
        w = _scaled(module, w, alpha, f"{op.name}_alpha")
    if beta == 0.0:
        bias = None  # beta x C adds nothing
    if bias is not None and beta != 1.0:
        bias = _scaled(module, bias, beta, f"{op.name}_beta")
    op.attrs = attrs
    if bias is None or module.values[bias].shape == (out.shape[1],):
        module.set_inputs(op, [x, w] + ([bias] if bias else []))
        return True
    data = float_constant(module, bias)
    if data is not None and channel_vector(data, out.shape) is not None:
        row = channel_vector(data, out.shape)
        assert row is not None
        module.set_inputs(op, [x, w, new_constant(module, f"{op.name}_b", row.astype(np.float32))])
        return True
    # A bias that differs per row: a plain add after the product.
    product = new_op(module, "gemm", [x, w], out, f"{op.name}_product", attrs)
    op.kind, op.attrs = "add", {}
    module.set_inputs(op, [product, bias])
    return True


def _scaled(module: Module, value: str, factor: float, name: str) -> str:
    """`value` x `factor`: folded into a constant, or into the scale of a dequantized
    integer constant (so that fold-qdq still sees quantized weights), else a `mul`."""
    data = float_constant(module, value)
    if data is not None:
        return new_constant(module, name, (data * np.float32(factor)).astype(np.float32))
    producer = module.producer(value)
    if producer is not None and producer.kind == "dequantize" \
            and module.is_constant(producer.inputs[0]) and factor != 0.0:
        codes = producer.inputs[0]
        quant, integers = module.values[codes].quant, module.constants[codes]
        info = np.iinfo(integers.dtype)
        # scale * (q - z) * f == (scale * |f|) * ((-q) - (-z)) when f < 0
        flip = -1 if factor < 0 else 1
        negatable = flip == 1 or (integers.min(initial=0) > info.min and quant is not None
                                  and all(-z >= info.min for z in quant.zero_point))
        scales = [float(np.float32(s * abs(factor))) for s in (quant.scale if quant else ())]
        if quant is not None and negatable and all(0 < s < np.inf for s in scales):
            scaled = Quant(tuple(scales), tuple(flip * z for z in quant.zero_point), quant.axis)
            inner = new_constant(module, f"{codes}_{name}", (flip * integers).astype(
                integers.dtype), scaled)
            return new_op(module, "dequantize", [inner], module.values[value],
                          f"{producer.name}_{name}")
    k = new_constant(module, name, np.asarray(factor, dtype=np.float32))
    return new_op(module, "mul", [value, k], module.values[value], f"{name}_mul")


def matmul_to_gemm(module: Module, op: Op) -> bool:
    a, b = op.inputs
    a_ty, b_ty, out = module.values[a], module.values[b], module.values[op.outputs[0]]
    producer = module.producer(b)
    constant_weight = float_constant(module, b) is not None or (
        producer is not None and producer.kind == "dequantize"
        and module.is_constant(producer.inputs[0]))
    if len(b_ty.shape) != 2 or len(a_ty.shape) < 2 or not constant_weight:
        return False
    w = transposed_weight(module, b, op.name)
    if len(a_ty.shape) == 2:
        op.kind = "gemm"
        module.set_inputs(op, [a, w])
        return True
    rows = int(np.prod(a_ty.shape[:-1]))
    flat = new_op(module, "reshape", [a], a_ty.with_shape((rows, a_ty.shape[-1])),
                  f"{op.name}_rows", {"shape": [rows, a_ty.shape[-1]]})
    product = new_op(module, "gemm", [flat, w], out.with_shape((rows, b_ty.shape[1])),
                     f"{op.name}_gemm")
    op.kind, op.attrs = "reshape", {"shape": list(out.shape)}
    module.set_inputs(op, [product])
    return True
