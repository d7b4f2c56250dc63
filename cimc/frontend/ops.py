"""The conversion table of import-onnx: ONNX op type -> function building IR op(s).

Each converter reads one node (at the canonical opset, see cimc/frontend/importer.py)
and emits the op kinds of docs/ir.md, normalizing attributes on the way
(defaults made explicit, negative axes made non-negative, auto_pad resolved
to explicit pads). A few kinds are produced only for `canonicalize` to
remove: `sum`, `identity`, `batch_norm`, and `gemm` carrying ONNX's
`trans_a`/`trans_b`/`alpha`/`beta`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cimc.frontend.build import Converter, NodeImport
from cimc.frontend.volume import pool_3d
from cimc.ir.module import TensorType
from cimc.reference.activation import GELU_APPROXIMATIONS, SELU_ALPHA, SELU_GAMMA

FLOAT32_MAX = float(np.finfo(np.float32).max)


def spatial_pads(
    ctx: NodeImport, spatial: tuple[int, ...], kernel: list[int], strides: list[int],
    dilations: list[int],
) -> list[int]:
    """Explicit [top, left, bottom, right] pads from `pads` or `auto_pad`."""
    auto_pad = ctx.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        pads = ctx.attrs.get("pads", [0] * 2 * len(kernel)) if auto_pad == "NOTSET" else None
        return [int(p) for p in pads] if pads else [0] * 2 * len(kernel)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.error(f"unknown auto_pad {auto_pad!r}")
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def _window_attrs(ctx: NodeImport, kernel: list[int], ranks: tuple[int, ...] = (4,)
                  ) -> dict[str, Any]:
    x = ctx.type(0)
    if len(x.shape) not in ranks:
        raise ctx.error(f"only 2-D {ctx.op_type} on [N,C,H,W] tensors is supported, "
                        f"not rank {len(x.shape)}")
    ones = [1] * len(kernel)
    strides = [int(s) for s in ctx.attrs.get("strides", ones)]
    dilations = [int(d) for d in ctx.attrs.get("dilations", ones)]
    pads = spatial_pads(ctx, x.shape[2:], kernel, strides, dilations)
    return {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations}


def conv_attrs(ctx: NodeImport, weight_shape: tuple[int, ...]) -> dict[str, Any]:
    """Attributes of an IR conv from a Conv-like node whose weight has `weight_shape`."""
    window = _window_attrs(ctx, [int(k) for k in weight_shape[2:]])
    return {
        "strides": window["strides"],
        "pads": window["pads"],
        "dilations": window["dilations"],
        "group": int(ctx.attrs.get("group", 1)),
    }


def conv(ctx: NodeImport) -> None:
    operands = [ctx.operand(i) for i in range(3) if ctx.has_input(i)]
    ctx.emit("conv", operands, conv_attrs(ctx, ctx.type(1).shape))


def max_pool(ctx: NodeImport) -> None:
    window = _window_attrs(ctx, [int(k) for k in ctx.attrs["kernel_shape"]], (4, 5))
    window["ceil_mode"] = int(ctx.attrs.get("ceil_mode", 0))
    if len(window["kernel"]) == 3:
        pool_3d(ctx, "max_pool", window)
        return
    ctx.emit("max_pool", [ctx.operand(0)], window)


def avg_pool(ctx: NodeImport) -> None:
    window = _window_attrs(ctx, [int(k) for k in ctx.attrs["kernel_shape"]], (4, 5))
    window["ceil_mode"] = int(ctx.attrs.get("ceil_mode", 0))
    window["count_include_pad"] = int(ctx.attrs.get("count_include_pad", 0))
    if len(window["kernel"]) == 3:
        pool_3d(ctx, "avg_pool", window)
        return
    if window["dilations"] == [1, 1]:
        del window["dilations"]
    ctx.emit("avg_pool", [ctx.operand(0)], window)


def gemm(ctx: NodeImport) -> None:
    # IR gemm weights are [N, K] (ONNX transB=1); other forms are left for canonicalize.
    attrs: dict[str, Any] = {}
    if ctx.attrs.get("transA", 0):
        attrs["trans_a"] = 1
    if not ctx.attrs.get("transB", 0):
        attrs["trans_b"] = 0
    for key in ("alpha", "beta"):
        if float(ctx.attrs.get(key, 1.0)) != 1.0:
            attrs[key] = float(ctx.attrs[key])
    operands = [ctx.operand(i) for i in range(3) if ctx.has_input(i)]
    ctx.emit("gemm", operands, attrs)


def clip(ctx: NodeImport) -> None:
    bounds = []
    for index, key, default in ((1, "min", -FLOAT32_MAX), (2, "max", FLOAT32_MAX)):
        if ctx.has_input(index):
            bounds.append(float(str(ctx.constant(index, f"{key} bound").reshape(()))))
        else:
            bounds.append(float(ctx.attrs.get(key, default)))
    ctx.emit("clip", [ctx.operand(0)], {"min": bounds[0], "max": bounds[1]})


def softmax(ctx: NodeImport) -> None:
    """Softmax and LogSoftmax (opset 13 and on: along one axis, to which older models
    are converted)."""
    rank = len(ctx.type(0).shape)
    kind = "softmax" if ctx.op_type == "Softmax" else "log_softmax"
    ctx.emit(kind, [ctx.operand(0)], {"axis": int(ctx.attrs.get("axis", -1)) % rank})


def lrn(ctx: NodeImport) -> None:
    attrs = {
        "size": int(ctx.attrs["size"]),
        "alpha": float(ctx.attrs.get("alpha", 0.0001)),
        "beta": float(ctx.attrs.get("beta", 0.75)),
        "bias": float(ctx.attrs.get("bias", 1.0)),
    }
    ctx.emit("lrn", [ctx.operand(0)], attrs)


def layer_norm(ctx: NodeImport) -> None:
    """LayerNormalization (opset 17): `layer_norm` for Y over axes [axis, rank); the
    optional Mean and InvStdDev outputs as reduce_mean, sub, mul, add and pow of x."""
    rank = len(ctx.type(0).shape)
    axis = int(ctx.attrs.get("axis", -1)) % rank
    epsilon = float(ctx.attrs.get("epsilon", 1e-5))
    if int(ctx.attrs.get("stash_type", 1)) != 1:
        raise ctx.error("stash_type other than 1 (float) is not supported")
    x = ctx.operand(0)
    operands = [x, ctx.operand(1), *([ctx.operand(2)] if ctx.has_input(2) else [])]
    ctx.emit("layer_norm", operands, {"axis": axis, "epsilon": epsilon})
    outputs = list(ctx.node.output) + ["", ""]
    if not (outputs[1] or outputs[2]):
        return
    axes = {"axes": list(range(axis, rank)), "keepdims": 1}
    stats = TensorType(tuple(d if k < axis else 1 for k, d in enumerate(ctx.type(0).shape)),
                       "f32")
    mean = ctx.emit("reduce_mean", [x], axes, result=outputs[1] or ctx.fresh("mean"),
                    result_type=stats, name=ctx.fresh("mean"))
    if not outputs[2]:
        return
    module = ctx.builder.module
    centered = ctx.emit("sub", [x, mean], result=ctx.fresh("centered"),
                        result_type=TensorType(ctx.type(0).shape, "f32"),
                        name=ctx.fresh("centered"))
    squares = ctx.emit("mul", [centered, centered], result=ctx.fresh("squares"),
                       result_type=TensorType(ctx.type(0).shape, "f32"), name=ctx.fresh("squares"))
    variance = ctx.emit("reduce_mean", [squares], axes, result=ctx.fresh("variance"),
                        result_type=stats, name=ctx.fresh("variance"))
    eps = module.add_constant(ctx.fresh("epsilon"), np.array(epsilon, np.float32))
    shifted = ctx.emit("add", [variance, eps], result=ctx.fresh("shifted"), result_type=stats,
                       name=ctx.fresh("shifted"))
    power = module.add_constant(ctx.fresh("power"), np.array(-0.5, np.float32))
    ctx.emit("pow", [shifted, power], result=outputs[2], result_type=stats,
             name=ctx.fresh("inv_std_dev"))


def batch_norm(ctx: NodeImport) -> None:
    if ctx.attrs.get("training_mode", 0):
        raise ctx.error("training-mode batch normalization is not supported; export in eval mode")
    operands = [ctx.operand(i) for i in range(5)]
    ctx.emit("batch_norm", operands, {"epsilon": float(ctx.attrs.get("epsilon", 1e-5))})


def reduce_mean(ctx: NodeImport) -> None:
    _reduce(ctx, "reduce_mean")


def reduce_sum(ctx: NodeImport) -> None:
    _reduce(ctx, "reduce_sum")


def _reduce(ctx: NodeImport, kind: str) -> None:
    """ReduceMean / ReduceSum: axes from the attribute (older opsets) or the constant
    second input, made non-negative; none means all, or nothing with
    noop_with_empty_axes."""
    rank = len(ctx.type(0).shape)
    if ctx.has_input(1):
        axes = [int(a) for a in ctx.constant(1, "axes").reshape(-1)]
    else:
        axes = [int(a) for a in ctx.attrs.get("axes", [])]
    if not axes:
        if ctx.attrs.get("noop_with_empty_axes", 0):
            ctx.emit("identity", [ctx.operand(0)])
            return
        axes = list(range(rank))
    attrs = {"axes": sorted(a % rank for a in axes), "keepdims": int(ctx.attrs.get("keepdims", 1))}
    ctx.emit(kind, [ctx.operand(0)], attrs)


def concat(ctx: NodeImport) -> None:
    rank = len(ctx.result_type().shape)
    operands = [ctx.operand(i) for i in range(len(ctx.node.input)) if ctx.has_input(i)]
    ctx.emit("concat", operands, {"axis": int(ctx.attrs["axis"]) % rank})


def reshape(ctx: NodeImport) -> None:
    # Reshape, Flatten, Squeeze and Unsqueeze: the inferred result shape says it all.
    ctx.emit("reshape", [ctx.operand(0)], {"shape": list(ctx.result_type().shape)})


def transpose(ctx: NodeImport) -> None:
    rank = len(ctx.type(0).shape)
    perm = [int(p) for p in ctx.attrs.get("perm", list(reversed(range(rank))))]
    ctx.emit("transpose", [ctx.operand(0)], {"perm": perm})


def cast(ctx: NodeImport) -> None:
    source, result = ctx.type(0), ctx.result_type()
    if source.dtype == result.dtype:
        ctx.emit("identity", [ctx.operand(0)])
    elif result.dtype == "f32" and source.quant is not None and source.quant.scale == (1.0,) \
            and source.quant.zero_point == (0,):
        # An integer accumulator (ConvInteger/MatMulInteger) read as float is its dequantization.
        ctx.emit("dequantize", [ctx.operand(0)])
    else:
        raise ctx.error(f"casting {source.dtype} to {result.dtype} is not supported")


def prelu(ctx: NodeImport) -> None:
    """PRelu with one slope for every element (torch's nn.PReLU(), its default) is a
    LeakyRelu of that slope."""
    slopes = np.unique(ctx.constant(1, "slope"))
    if slopes.size != 1:
        raise ctx.error(f"a slope per channel ({slopes.size} values) is not supported; one "
                        "slope for all channels is (torch's nn.PReLU() with num_parameters=1)")
    if ctx.type(0).dtype != "f32":
        raise ctx.error(f"PRelu of a {ctx.type(0).dtype} tensor is not supported; it takes "
                        "f32 (a quantized model dequantizes the operand first)")
    ctx.emit("leaky_relu", [ctx.operand(0)], {"alpha": float(slopes[0])})


def activation(kind: str, defaults: dict[str, float] | None = None) -> Converter:
    """A unary activation on a float tensor; its float attributes made explicit."""

    def convert(ctx: NodeImport) -> None:
        dtype = ctx.type(0).dtype
        if dtype != "f32":
            raise ctx.error(f"{ctx.op_type} of a {dtype} tensor is not supported; it takes "
                            "f32 (a quantized model dequantizes the operand first)")
        attrs: dict[str, Any] = {key: float(ctx.attrs.get(key, value))
                                 for key, value in (defaults or {}).items()}
        if kind == "gelu":
            approximate = ctx.attrs.get("approximate", "none")
            if approximate not in GELU_APPROXIMATIONS:
                raise ctx.error(f"approximate={approximate!r} is not one of "
                                f"{', '.join(GELU_APPROXIMATIONS)}")
            attrs["approximate"] = approximate
        ctx.emit(kind, [ctx.operand(0)], attrs)

    return convert


def _simple(kind: str, arity: int | None = 1) -> Converter:
    def convert(ctx: NodeImport) -> None:
        count = len(ctx.node.input) if arity is None else arity
        ctx.emit(kind, [ctx.operand(i) for i in range(count)])

    return convert


CONVERTERS: dict[str, Converter] = {
    "Add": _simple("add", 2),
    "AveragePool": avg_pool,
    "BatchNormalization": batch_norm,
    "Cast": cast,
    "Clip": clip,
    "Concat": concat,
    "Conv": conv,
    "Div": _simple("div", 2),
    "Dropout": _simple("identity"),
    "Elu": activation("elu", {"alpha": 1.0}),
    "Erf": activation("erf"),
    "Flatten": reshape,
    "Gemm": gemm,
    "Gelu": activation("gelu"),
    "GlobalAveragePool": _simple("global_avg_pool"),
    "GlobalMaxPool": _simple("global_max_pool"),
    "HardSigmoid": activation("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
    "HardSwish": activation("hard_swish"),
    "Identity": _simple("identity"),
    "LeakyRelu": activation("leaky_relu", {"alpha": 0.01}),
    "PRelu": prelu,
    "LRN": lrn,
    "LayerNormalization": layer_norm,
    "MatMul": _simple("matmul", 2),
    "MaxPool": max_pool,
    "Mul": _simple("mul", 2),
    "ReduceMean": reduce_mean,
    "ReduceSum": reduce_sum,
    "Relu": _simple("relu"),
    "Pow": _simple("pow", 2),
    "Reshape": reshape,
    "Selu": activation("selu", {"alpha": SELU_ALPHA, "gamma": SELU_GAMMA}),
    "Sigmoid": activation("sigmoid"),
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "Softplus": activation("softplus"),
    "Squeeze": reshape,
    "Sub": _simple("sub", 2),
    "Sum": _simple("sum", None),
    "Tanh": activation("tanh"),
    "Transpose": transpose,
    "Unsqueeze": reshape,
}
