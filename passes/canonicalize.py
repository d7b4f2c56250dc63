"""canonicalize: bring an imported module to the canonical form later passes expect.

The pass is a list of small named rewrites, (op kind, function) pairs applied
until none fires, then dead ops and constants are removed. Afterwards:
  - no `batch_norm`, `sum` or `identity` remain (batch norms fold into the
    conv/gemm before them or become a per-channel `mul` + `add`);
  - per-channel multiplications and additions by constants after a float
    conv/gemm are folded into its weights and bias; chains of them merge;
  - `gemm` is `gemm(x, w[N,K], b[N]?)` without ONNX's transposes and scales;
    `matmul` by a constant matrix (or a dequantized integer one) is a `gemm`;
  - reshapes have concrete shapes, no-op reshapes and transposes are gone,
    chains of reshapes are one reshape;
  - `reduce_mean` over H and W is `global_avg_pool`.
Quantize/dequantize pairs are never folded through: a QDQ weight stays
`dequantize(integer constant)`, transposed as an integer when gemm needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cimc.ir import Module, Op, Quant, TensorType
from cimc.pass_base import Pass

Rewrite = Callable[[Module, Op], bool]


# ---- small queries and edits ------------------------------------------------
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
    """Let readers of `op`'s result read `value` (default its first operand); drop `op`."""
    module.replace_uses(op.outputs[0], value or op.inputs[0])
    module.remove_op(op)
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


# ---- rewrites -------------------------------------------------------------------
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
    ty = module.values[op.inputs[0]]
    if len(ty.shape) != 4 or list(op.attrs.get("axes", [])) != [2, 3]:
        return False
    if op.attrs.get("keepdims", 1):
        op.kind, op.attrs = "global_avg_pool", {}
        return True
    pooled = new_op(module, "global_avg_pool", [op.inputs[0]],
                    TensorType(ty.shape[:2] + (1, 1), ty.dtype), f"{op.name}_pool")
    op.kind, op.attrs = "reshape", {"shape": list(ty.shape[:2])}
    module.set_inputs(op, [pooled])
    return True


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
    if alpha != 1.0:
        w = _scaled(module, w, alpha, f"{op.name}_alpha")
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
    data = float_constant(module, value)
    if data is not None:
        return new_constant(module, name, (data * np.float32(factor)).astype(np.float32))
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


PATTERNS: list[tuple[str, Rewrite]] = [
    ("identity", drop_identity),
    ("sum", sum_to_adds),
    ("batch_norm", fold_batch_norm),
    ("sub", sub_to_add),
    ("mul", fold_channel_mul),
    ("add", fold_channel_add),
    ("mul", merge_affine_chain),
    ("add", merge_affine_chain),
    ("reshape", concrete_reshape),
    ("transpose", drop_identity_transpose),
    ("reduce_mean", global_mean),
    ("gemm", normalize_gemm),
    ("matmul", matmul_to_gemm),
]


@dataclass
class Canonicalize(Pass):
    """Apply PATTERNS to a fixed point, then remove dead ops and constants."""

    name: ClassVar[str] = "canonicalize"

    def apply(self, module: Module) -> None:
        changed = True
        while changed:
            changed = False
            for op in list(module.ops()):
                if op.name not in module.graph:
                    continue  # removed by an earlier rewrite in this sweep
                for kind, rewrite in PATTERNS:
                    if op.kind == kind and rewrite(module, op):
                        changed = True
                        break
            prune(module)


def prune(module: Module) -> None:
    """Remove ops nobody reads (rewrites leave them behind) and unread constants.

    Module.remove_dead does the same with a scan per op; reading the graph's
    out-degrees keeps this linear, which matters for models of a thousand ops.
    """
    for op in reversed(list(module.ops())):
        if module.graph.out_degree(op.name) == 0 and not set(op.outputs) & set(module.outputs):
            module.remove_op(op)
    read = {value for op in module.ops() for value in op.inputs} | set(module.outputs)
    for name in [c for c in module.constants if c not in read]:
        del module.constants[name]
        del module.values[name]
