"""The reference interpreter: float ops against onnxruntime, integer ops against
hand computations of the semantics in docs/ir.md."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Quant, TensorType
from cimc.reference import KERNELS, run_module
from cimc.reference.integer import ADD_MULTIPLIER_BITS, add_multipliers
from cimc.reference.linear import correlate
from cimc.reference.oracle import exact_outputs
from cimc.reference.requant import fixed_point

RNG = np.random.default_rng(1234)


def ort_single(op_type, feeds, consts=None, attrs=None, opset=18, extra_inputs=()):
    """Run one ONNX node on onnxruntime; inputs in order: feeds, then consts, then extras."""
    consts = consts or {}
    names = [*feeds, *consts, *extra_inputs]
    node = helper.make_node(op_type, names, ["y"], **(attrs or {}))
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in feeds.items()
        ],
        [onnx.ValueInfoProto(name="y")],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    return exact_outputs(model, feeds)[0]


def ir_single(kind, feeds, consts, result, attrs=None, quants=None):
    """A module of one op reading `feeds` (inputs) and `consts`, in that order."""
    quants = quants or {}
    module = Module("t")
    for name, value in feeds.items():
        dtype = {np.dtype(np.float32): "f32", np.dtype(np.int8): "i8", np.dtype(np.uint8): "u8"}[
            value.dtype
        ]
        module.add_input(name, TensorType(value.shape, dtype, quants.get(name)))
    for name, value in consts.items():
        module.add_constant(name, value, quants.get(name))
    op = module.add_op(kind, [*feeds, *consts], [result], name="op", attrs=attrs or {})
    module.outputs.append(op.outputs[0])
    return module


def check_float(
    kind, onnx_op, feeds, consts=None, ir_attrs=None, onnx_attrs=None, opset=18, extra_inputs=()
):
    """Run `kind` in the reference and `onnx_op` in onnxruntime; compare to 1e-4 relative.

    onnxruntime accumulates in float32, so elements that cancel to near zero
    carry an absolute error; the floor is 1e-5 of the largest magnitude.
    """
    consts = consts or {}
    expected = ort_single(onnx_op, feeds, consts, onnx_attrs, opset, extra_inputs)
    module = ir_single(kind, feeds, consts, TensorType(expected.shape, "f32"), ir_attrs)
    got = run_module(module, feeds)["op"]
    assert got.dtype == np.float32
    floor = 1e-5 * float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=floor)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


CONV_CASES = [
    dict(kernel_shape=[3, 3]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1]),
    dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(kernel_shape=[1, 1], group=2),
    dict(kernel_shape=[3, 3], group=4, pads=[1, 1, 1, 1]),  # depthwise
    dict(kernel_shape=[5, 5], strides=[1, 2], pads=[2, 2, 2, 2]),
]


@pytest.mark.parametrize("attrs", CONV_CASES)
@pytest.mark.parametrize("channels", [4, 32])
def test_float_conv_matches_onnxruntime(attrs, channels):
    group = attrs.get("group", 1)
    if attrs.get("group") == 4:
        group = channels
    onnx_attrs = {**attrs, "group": group}
    x = f32(2, channels, 9, 10)
    w = f32(8 if group != channels else channels, channels // group, *attrs["kernel_shape"])
    b = f32(w.shape[0])
    ir_attrs = {
        "strides": attrs.get("strides", [1, 1]),
        "pads": [attrs.get("pads", [0] * 4)[i] for i in (0, 1, 2, 3)],
        "dilations": attrs.get("dilations", [1, 1]),
        "group": group,
    }
    # ONNX pads are (top, left, bottom, right) for 2-D, the same order as the IR's.
    check_float("conv", "Conv", {"x": x}, {"w": w, "b": b}, ir_attrs, onnx_attrs)


def test_float_gemm_and_matmul_match_onnxruntime():
    check_float(
        "gemm", "Gemm", {"x": f32(3, 5)}, {"w": f32(4, 5), "b": f32(4)}, onnx_attrs={"transB": 1}
    )
    check_float("matmul", "MatMul", {"a": f32(2, 3, 4), "b": f32(2, 4, 5)})


@pytest.mark.parametrize(("kind", "onnx_op"), [("add", "Add"), ("sub", "Sub"), ("mul", "Mul")])
def test_float_binary_ops_broadcast_like_onnxruntime(kind, onnx_op):
    check_float(kind, onnx_op, {"a": f32(2, 3, 4, 5)}, {"b": f32(1, 3, 1, 1)})
    check_float(kind, onnx_op, {"a": f32(2, 3, 4, 5), "b": f32(5)})


@pytest.mark.parametrize(
    ("kind", "onnx_op"), [("relu", "Relu"), ("sigmoid", "Sigmoid"), ("tanh", "Tanh")]
)
def test_float_activations_match_onnxruntime(kind, onnx_op):
    check_float(kind, onnx_op, {"x": f32(2, 3, 4, 5) * 4})


def test_float_clip_softmax_lrn_batch_norm_match_onnxruntime():
    x = f32(2, 6, 4, 5) * 4
    check_float(
        "clip",
        "Clip",
        {"x": x},
        {"lo": np.float32(0), "hi": np.float32(6)},
        ir_attrs={"min": 0.0, "max": 6.0},
    )
    check_float(
        "softmax", "Softmax", {"x": f32(3, 10)}, ir_attrs={"axis": 1}, onnx_attrs={"axis": 1}
    )
    for size in (3, 5):  # onnxruntime supports odd sizes only
        attrs = {"size": size, "alpha": 0.01, "beta": 0.75, "bias": 2.0}
        check_float("lrn", "LRN", {"x": x}, ir_attrs=attrs, onnx_attrs=attrs)
    stats = {"s": f32(6), "b": f32(6), "m": f32(6), "v": np.abs(f32(6)) + 0.1}
    check_float(
        "batch_norm",
        "BatchNormalization",
        {"x": x},
        stats,
        ir_attrs={"epsilon": 1e-3},
        onnx_attrs={"epsilon": 1e-3},
    )


POOL_CASES = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 0], ceil_mode=1),
    dict(kernel_shape=[2, 3], strides=[1, 2], ceil_mode=1),
]


def _pool_ir_attrs(attrs):
    return {
        "kernel": attrs["kernel_shape"],
        "strides": attrs.get("strides", [1, 1]),
        "pads": attrs.get("pads", [0] * 4),
        "dilations": attrs.get("dilations", [1, 1]),
        "ceil_mode": attrs.get("ceil_mode", 0),
        "count_include_pad": attrs.get("count_include_pad", 0),
    }


@pytest.mark.parametrize("attrs", [*POOL_CASES, dict(kernel_shape=[2, 2], dilations=[2, 2])])
def test_float_max_pool_matches_onnxruntime(attrs):
    check_float(
        "max_pool",
        "MaxPool",
        {"x": f32(2, 3, 9, 11)},
        ir_attrs=_pool_ir_attrs(attrs),
        onnx_attrs=attrs,
    )


@pytest.mark.parametrize("attrs", POOL_CASES)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_float_avg_pool_matches_onnxruntime(attrs, include_pad):
    attrs = {**attrs, "count_include_pad": include_pad}
    check_float(
        "avg_pool",
        "AveragePool",
        {"x": f32(2, 3, 9, 11)},
        ir_attrs=_pool_ir_attrs(attrs),
        onnx_attrs=attrs,
    )


def test_float_global_pools_and_reduce_mean_match_onnxruntime():
    x = f32(2, 3, 5, 6)
    check_float("global_avg_pool", "GlobalAveragePool", {"x": x})
    check_float("global_max_pool", "GlobalMaxPool", {"x": x})
    check_float(
        "reduce_mean",
        "ReduceMean",
        {"x": x},
        {"axes": np.array([2, 3], np.int64)},
        ir_attrs={"axes": [2, 3], "keepdims": 1},
    )


def test_float_layout_ops_match_onnxruntime():
    check_float(
        "concat",
        "Concat",
        {"a": f32(2, 3, 4), "b": f32(2, 5, 4)},
        ir_attrs={"axis": 1},
        onnx_attrs={"axis": 1},
    )
    check_float(
        "reshape",
        "Reshape",
        {"x": f32(2, 3, 4)},
        {"s": np.array([2, 12], np.int64)},
        ir_attrs={"shape": [2, 12]},
    )
    check_float(
        "transpose",
        "Transpose",
        {"x": f32(2, 3, 4)},
        ir_attrs={"perm": [0, 2, 1]},
        onnx_attrs={"perm": [0, 2, 1]},
    )


# ---- quantize / dequantize: bit-exact against onnxruntime -------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_and_dequantize_equal_onnxruntime(dtype, per_axis):
    x = f32(2, 3, 4, 5) * 3
    x.flat[:6] = [0.5, 1.5, -0.5, -2.5, 1e9, -1e9]  # ties and saturation
    if per_axis:
        scale = np.array([0.5, 0.03, 0.011], np.float32)
        zp = np.array([0, 3, -7] if dtype == np.int8 else [128, 3, 200], dtype)
        quant, attrs = Quant(tuple(map(float, scale)), tuple(map(int, zp)), 1), {"axis": 1}
    else:
        scale, zp = np.float32(0.5), np.array(3, dtype)
        quant, attrs = Quant((0.5,), (3,)), {}
    name = "i8" if dtype == np.int8 else "u8"
    expected = ort_single("QuantizeLinear", {"x": x}, {"s": scale, "z": zp}, attrs)
    module = ir_single("quantize", {"x": x}, {}, TensorType(x.shape, name, quant))
    q = run_module(module, {"x": x})["op"]
    np.testing.assert_array_equal(q, expected)
    expected_f = ort_single("DequantizeLinear", {"q": q}, {"s": scale, "z": zp}, attrs)
    module = ir_single("dequantize", {"q": q}, {}, TensorType(x.shape, "f32"), quants={"q": quant})
    np.testing.assert_array_equal(run_module(module, {"q": q})["op"], expected_f)


# ---- integer semantics against hand computations ----------------------------------------


def requantize_by_hand(acc: int, multiplier: float) -> int:
    """round_half_even(acc * M / 2^shift) with Python's exact rationals."""
    mantissa, shift = (int(v) for v in fixed_point(multiplier))
    return round(Fraction(acc * mantissa, 2**shift))


def sat(v, lo, hi):
    return max(lo, min(hi, v))


def test_quantized_conv_is_exact_integer_arithmetic():
    x = RNG.integers(0, 256, (2, 3, 5, 6)).astype(np.uint8)
    w = RNG.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    b = RNG.integers(-3000, 3000, 4).astype(np.int32)
    sx, zx, sy, zy = 0.02, 131, 0.3, -5
    sw = [0.01, 0.002, 0.05, 0.0071]
    quants = {"x": Quant((sx,), (zx,)), "w": Quant(tuple(sw), (0, 0, 0, 0), 0)}
    result = TensorType((2, 4, 2, 3), "i8", Quant((sy,), (zy,)))
    attrs = {"strides": [2, 2], "pads": [1, 1, 0, 0], "dilations": [1, 1], "group": 1}
    module = ir_single("conv", {"x": x}, {"w": w, "b": b}, result, attrs, quants)
    got = run_module(module, {"x": x})["op"]
    xp = np.pad(x.astype(int) - zx, ((0, 0), (0, 0), (1, 0), (1, 0)))
    for n, m, oh, ow in np.ndindex(got.shape):
        acc = int(b[m])
        for c, i, j in np.ndindex(3, 3, 3):
            acc += int(xp[n, c, 2 * oh + i, 2 * ow + j]) * int(w[m, c, i, j])
        expected = sat(requantize_by_hand(acc, sx * sw[m] / sy) + zy, -128, 127)
        assert got[n, m, oh, ow] == expected, (n, m, oh, ow)


def test_quantized_gemm_saturates_and_clamps():
    x = RNG.integers(-128, 128, (3, 7)).astype(np.int8)
    w = RNG.integers(-127, 128, (5, 7)).astype(np.int8)
    b = np.array([0, 10, -10, 2**31 - 1, -(2**31)], np.int32)  # the last two saturate int32
    quants = {"x": Quant((0.05,), (4,)), "w": Quant((0.02,) * 5, (0, 1, -2, 0, 0), 0)}
    result = TensorType((3, 5), "u8", Quant((0.04,), (120,)))
    module = ir_single("gemm", {"x": x}, {"w": w, "b": b}, result, {"clamp": [100, 250]}, quants)
    got = run_module(module, {"x": x})["op"]
    zw = [0, 1, -2, 0, 0]
    for r, c in np.ndindex(got.shape):
        acc = int(b[c]) + sum((int(x[r, k]) - 4) * (int(w[c, k]) - zw[c]) for k in range(7))
        acc = sat(acc, -(2**31), 2**31 - 1)
        expected = sat(requantize_by_hand(acc, 0.05 * 0.02 / 0.04) + 120, 100, 250)
        assert got[r, c] == expected
    assert got[:, 3].tolist() == [250] * 3 and got[:, 4].tolist() == [100] * 3


def test_requantization_rounds_half_to_even():
    # multiplier exactly 1/2: odd accumulators fall on ties
    x = np.array([[1], [3], [5], [-1], [-3], [0]], np.int8)
    w = np.array([[1]], np.int8)
    quants = {"x": Quant((1.0,), (0,)), "w": Quant((1.0,), (0,), 0)}
    module = ir_single(
        "gemm", {"x": x}, {"w": w}, TensorType((6, 1), "i8", Quant((2.0,), (0,))), quants=quants
    )
    assert run_module(module, {"x": x})["op"].ravel().tolist() == [0, 2, 2, 0, -2, 0]


def test_quantized_add_uses_shared_shift_multipliers():
    a = RNG.integers(-128, 128, (2, 3, 4)).astype(np.int8)
    b = RNG.integers(-128, 128, (1, 3, 1)).astype(np.int8)
    sa, sb, sy = 0.031, 0.0123, 0.047
    quants = {"a": Quant((sa,), (-3,)), "b": Quant((sb,), (9,))}
    for kind, sign in (("add", 1), ("sub", -1)):
        result = TensorType(a.shape, "i8", Quant((sy,), (-20,)))
        module = ir_single(kind, {"a": a, "b": b}, {}, result, {"clamp": [-100, 127]}, quants)
        got = run_module(module, {"a": a, "b": b})["op"]
        # the documented rule: shift from the larger multiplier, 20-bit mantissas
        exponent = math.frexp(max(sa / sy, sb / sy))[1]
        shift = ADD_MULTIPLIER_BITS - exponent
        ma, mb = round(sa / sy * 2**shift), round(sb / sy * 2**shift)
        assert add_multipliers(sa, sb, sy) == (ma, mb, shift)
        assert 2**19 <= max(ma, mb) <= 2**20
        for idx in np.ndindex(a.shape):
            acc = (int(a[idx]) + 3) * ma + sign * (int(b[0, idx[1], 0]) - 9) * mb
            assert abs(acc) < 2**31
            expected = sat(round(Fraction(acc, 2**shift)) - 20, -100, 127)
            assert got[idx] == expected


def test_quantized_average_pools_requantize_the_window_sum():
    x = RNG.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8)
    quants = {"x": Quant((0.1,), (100,))}
    q_y = Quant((0.07,), (90,))
    attrs = {
        "kernel": [3, 3],
        "strides": [2, 2],
        "pads": [1, 1, 1, 1],
        "ceil_mode": 0,
        "count_include_pad": 0,
    }
    module = ir_single("avg_pool", {"x": x}, {}, TensorType((1, 2, 3, 3), "u8", q_y), attrs, quants)
    got = run_module(module, {"x": x})["op"]
    for c, oh, ow in np.ndindex(2, 3, 3):
        rows = range(max(2 * oh - 1, 0), min(2 * oh + 2, 5))
        cols = range(max(2 * ow - 1, 0), min(2 * ow + 2, 5))
        acc = sum(int(x[0, c, r, s]) - 100 for r in rows for s in cols)
        count = len(rows) * len(cols)
        expected = sat(requantize_by_hand(acc, 0.1 / (0.07 * count)) + 90, 0, 255)
        assert got[0, c, oh, ow] == expected
    module = ir_single(
        "global_avg_pool", {"x": x}, {}, TensorType((1, 2, 1, 1), "u8", q_y), quants=quants
    )
    got = run_module(module, {"x": x})["op"]
    for c in range(2):
        acc = int(x[0, c].astype(int).sum()) - 100 * 25
        assert got[0, c, 0, 0] == sat(requantize_by_hand(acc, 0.1 / (0.07 * 25)) + 90, 0, 255)


def test_integer_max_pool_relu_clip_work_on_codes_and_requantize():
    x = RNG.integers(-128, 128, (1, 2, 4, 4)).astype(np.int8)
    qx = Quant((0.05,), (-10,))
    attrs = {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0}
    same = ir_single("max_pool", {"x": x}, {}, TensorType((1, 2, 2, 2), "i8", qx), attrs, {"x": qx})
    expected = x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(run_module(same, {"x": x})["op"], expected)
    qy = Quant((0.1,), (3,))
    other = ir_single(
        "max_pool", {"x": x}, {}, TensorType((1, 2, 2, 2), "i8", qy), attrs, {"x": qx}
    )
    requantized = [sat(requantize_by_hand(int(v) + 10, 0.5) + 3, -128, 127) for v in expected.flat]
    assert run_module(other, {"x": x})["op"].ravel().tolist() == requantized
    # relu clamps at the result zero point; clip at the quantized bounds 0 and 6
    relu = ir_single("relu", {"x": x}, {}, TensorType(x.shape, "i8", qy), {}, {"x": qx})
    codes = [sat(requantize_by_hand(int(v) + 10, 0.5) + 3, -128, 127) for v in x.flat]
    assert run_module(relu, {"x": x})["op"].ravel().tolist() == [max(c, 3) for c in codes]
    clip = ir_single(
        "clip", {"x": x}, {}, TensorType(x.shape, "i8", qy), {"min": 0.0, "max": 2.0}, {"x": qx}
    )
    assert run_module(clip, {"x": x})["op"].ravel().tolist() == [sat(c, 3, 23) for c in codes]


def test_integer_concat_requantizes_differing_operands():
    a = RNG.integers(-128, 128, (1, 2, 3)).astype(np.int8)
    b = RNG.integers(-128, 128, (1, 1, 3)).astype(np.int8)
    qa, qb = Quant((0.1,), (0,)), Quant((0.3,), (5,))
    module = ir_single(
        "concat",
        {"a": a, "b": b},
        {},
        TensorType((1, 3, 3), "i8", qa),
        {"axis": 1},
        {"a": qa, "b": qb},
    )
    got = run_module(module, {"a": a, "b": b})["op"]
    np.testing.assert_array_equal(got[:, :2], a)
    expected_b = [sat(requantize_by_hand(int(v) - 5, 3.0), -128, 127) for v in b.flat]
    assert got[:, 2].ravel().tolist() == expected_b


def test_correlate_float64_path_equals_int64_path():
    x = RNG.integers(-255, 256, (2, 6, 7, 7))
    w = RNG.integers(-255, 256, (4, 3, 3, 3))
    exact = correlate(x.astype(np.int64), w.astype(np.int64), [1, 1], [1] * 4, [1, 1], 2)
    fast = correlate(x.astype(np.float64), w.astype(np.float64), [1, 1], [1] * 4, [1, 1], 2)
    np.testing.assert_array_equal(fast.astype(np.int64), exact)


# ---- the interpreter ---------------------------------------------------------------------


def _flatten_gemm_module(flat_shape):
    module = Module("t")
    module.add_input("x", TensorType((1, 2, 3), "f32"))
    module.add_constant("w", f32(4, 6))
    module.add_op(
        "reshape",
        ["x"],
        [TensorType(tuple(flat_shape), "f32")],
        name="flat",
        attrs={"shape": list(flat_shape)},
    )
    src = "flat"
    if len(flat_shape) == 1:  # [6] -> [1, 6]: does not keep the batch axis
        module.add_op(
            "reshape", ["flat"], [TensorType((1, 6), "f32")], name="row", attrs={"shape": [1, 6]}
        )
        src = "row"
    module.add_op("gemm", [src, "w"], [TensorType((1, 4), "f32")], name="y")
    module.outputs.append("y")
    return module


@pytest.mark.parametrize("flat_shape", [(1, 6), (6,)])
def test_a_stacked_batch_gives_the_results_of_each_slice(flat_shape):
    module = _flatten_gemm_module(flat_shape)
    batch = f32(5, 2, 3)
    together = run_module(module, {"x": batch})["y"]
    assert together.shape == (5, 4)
    for i in range(5):
        alone = run_module(module, {"x": batch[i : i + 1]})["y"]
        np.testing.assert_allclose(together[i : i + 1], alone, rtol=1e-6)


def test_feeds_of_the_wrong_shape_or_type_are_rejected():
    module = _flatten_gemm_module((1, 6))
    with pytest.raises(CimcError, match="expected \\[1, 2, 3\\]"):
        run_module(module, {"x": f32(1, 3, 2)})
    with pytest.raises(CimcError, match="element type float64"):
        run_module(module, {"x": np.zeros((1, 2, 3))})
    with pytest.raises(CimcError, match="no value given for input"):
        run_module(module, {})


def test_an_unknown_op_kind_lists_the_known_ones():
    module = ir_single("frobnicate", {"x": f32(1, 2)}, {}, TensorType((1, 2), "f32"))
    with pytest.raises(CimcError, match="no op kind 'frobnicate' .*conv.*max_pool"):
        run_module(module, {"x": f32(1, 2)})
    assert {"conv", "gemm", "add", "quantize", "dequantize", "requantize"} <= set(KERNELS)


def test_quantized_ops_agree_with_onnxruntime_qlinear_within_one_quantum():
    x = RNG.integers(0, 256, (2, 8, 9, 9)).astype(np.uint8)
    w = RNG.integers(-127, 128, (16, 8, 3, 3)).astype(np.int8)
    sw = (RNG.random(16) * 0.01 + 0.001).astype(np.float32)
    b = RNG.integers(-5000, 5000, 16).astype(np.int32)
    sx, zx, sy, zy = np.float32(0.02), np.uint8(128), np.float32(0.15), np.uint8(100)
    consts = {
        "sx": sx,
        "zx": zx,
        "w": w,
        "sw": sw,
        "zw": np.zeros(16, np.int8),
        "sy": sy,
        "zy": zy,
        "b": b,
    }
    expected = ort_single("QLinearConv", {"x": x}, consts, {"pads": [1, 1, 1, 1]})
    quants = {"x": Quant((float(sx),), (128,)), "w": Quant(tuple(map(float, sw)), (0,) * 16, 0)}
    result = TensorType(expected.shape, "u8", Quant((float(sy),), (100,)))
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    module = ir_single("conv", {"x": x}, {"w": w, "b": b}, result, attrs, quants)
    got = run_module(module, {"x": x})["op"]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert np.mean(got == expected) > 0.99


def test_an_inconsistent_quantized_op_is_reported_by_name():
    x = f32(1, 2)
    result = TensorType((1, 2), "i8", Quant((0.1,), (0,)))
    module = ir_single("relu", {"x": x}, {}, result)  # float operand, integer result
    with pytest.raises(CimcError, match="op 'op' \\(relu\\)"):
        run_module(module, {"x": x})


def test_quantized_mul_and_requantize_by_hand():
    a = RNG.integers(-128, 128, (2, 5)).astype(np.int8)
    b = RNG.integers(0, 256, (2, 5)).astype(np.uint8)
    qa, qb, qy = Quant((0.05,), (7,)), Quant((0.02,), (100,)), Quant((0.03,), (-4,))
    module = ir_single(
        "mul", {"a": a, "b": b}, {}, TensorType(a.shape, "i8", qy), {}, {"a": qa, "b": qb}
    )
    got = run_module(module, {"a": a, "b": b})["op"]
    for idx in np.ndindex(a.shape):
        acc = (int(a[idx]) - 7) * (int(b[idx]) - 100)
        assert got[idx] == sat(requantize_by_hand(acc, 0.05 * 0.02 / 0.03) - 4, -128, 127)
    module = ir_single("requantize", {"b": b}, {}, TensorType(b.shape, "i8", qy), {}, {"b": qb})
    got = run_module(module, {"b": b})["op"]
    expected = [sat(requantize_by_hand(int(v) - 100, 0.02 / 0.03) - 4, -128, 127) for v in b.flat]
    assert got.ravel().tolist() == expected


@pytest.mark.parametrize("signed", [True, False])
def test_max_pool_window_wholly_in_padding_gives_the_lowest_code_as_onnxruntime(
        signed, tmp_path):
    """onnxruntime's maximum over no value stays the lowest float, quantized to the lowest
    code; the reference requantized the padding code instead (4 quanta off)."""
    from fuzz_models import PoolSpec, QdqBuilder, Quant

    from cimc.frontend.quantize import import_model
    from cimc.passes.fold_qdq import FoldQdq

    zp = 3 if signed else 20
    b = QdqBuilder(np.random.default_rng(0))
    x = b.input((1, 2, 1, 4), Quant(1.0, zp, signed))
    y = b.pool(x, PoolSpec("max", (2, 1), (2, 2), (1, 0, 1, 0), (2, 2)), Quant(1.04, zp, signed))
    path = b.g.save(tmp_path / "m.onnx", x, [y])
    module = import_model(str(path))
    FoldQdq().apply(module)
    feeds = {"input": np.arange(-4, 4, dtype=np.float32).reshape(1, 2, 1, 4) * 9}
    got = run_module(module, feeds)[module.outputs[0]]
    np.testing.assert_array_equal(got, exact_outputs(path, feeds)[0])


@pytest.mark.parametrize("kind", ["add", "sub", "mul"])
@pytest.mark.parametrize("dtype", ["i8", "u8", "i32"])
def test_plain_integer_arithmetic_wraps_as_onnx_defines_it(kind: str, dtype: str) -> None:
    """Integers with no quantization are numbers, not codes: ONNX's Add of int8 wraps."""
    np_type = {"i8": np.int8, "u8": np.uint8, "i32": np.int32}[dtype]
    info = np.iinfo(np_type)
    a = RNG.integers(info.min, info.max, (3, 4), endpoint=True).astype(np_type)
    b = RNG.integers(info.min, info.max, (3, 4), endpoint=True).astype(np_type)
    m = Module()
    m.add_input("a", TensorType((3, 4), dtype))
    m.add_input("b", TensorType((3, 4), dtype))
    op = m.add_op(kind, ["a", "b"], [TensorType((3, 4), dtype)])
    m.outputs = op.outputs
    got = run_module(m, {"a": a, "b": b})[op.outputs[0]]
    onnx_op = {"add": "Add", "sub": "Sub", "mul": "Mul"}[kind]
    graph = helper.make_graph(
        [helper.make_node(onnx_op, ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(np_type)),
                                       (3, 4)) for n in "ab"],
        [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(np.dtype(np_type)),
                                       (3, 4))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(model).run(None, {"a": a, "b": b})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
