"""fold-qdq: the structure it leaves, and that the integer ops compute what the
QDQ float ops did (to within one quantum of the result)."""

# ruff: noqa: E501 (modules in the textual IR keep one op a line)

from __future__ import annotations

import numpy as np
import pytest

from cimc.diagnostics import CimcError
from cimc.ir.module import Module
from cimc.ir.text import parse_module
from cimc.ir.verifier import verify
from cimc.passes.fold_qdq import FoldQdq
from cimc.reference import run_module

RNG = np.random.default_rng(7)


def fold(text: str) -> tuple[Module, Module]:
    """The module of `text` before and after fold-qdq."""
    folded = parse_module(text)
    FoldQdq().apply(folded)
    verify(folded)
    return parse_module(text), folded


def kinds(module: Module) -> list[str]:
    return [op.kind for op in module.ops()]


def assert_within_one_quantum(before: Module, after: Module, feeds, scales) -> None:
    expected, got = run_module(before, feeds), run_module(after, feeds)
    for name, scale in scales.items():
        steps = np.abs(got[name].astype(np.float64) - expected[name]) / scale
        assert steps.max() <= 1 + 1e-3, name  # float32 dequantization noise
        assert np.mean(steps < 1e-3) > 0.9, name  # mostly identical


CONV = """
module @conv {
  input %x : f32[2,3,6,6]
  const %w : i8[4,3,3,3] q<axis=0, scale=[0.01, 0.02, 0.015, 0.005], zp=[0, 0, 0, 0]> = WEIGHTS
  const %b : f32[4] = [0.5, -0.25, 0.1, 2.0]
  %xq = quantize(%x) : i8[2,3,6,6] q<scale=0.05, zp=4> loc("xq")
  %xd = dequantize(%xq) : f32[2,3,6,6] loc("xd")
  %wd = dequantize(%w) : f32[4,3,3,3] loc("wd")
  %c = conv(%xd, %wd, %b) {strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], group=1} : f32[2,4,3,3] loc("conv1")
  %r = ACTIVATION : f32[2,4,3,3] loc("act")
  %y = quantize(%r) : i8[2,4,3,3] q<scale=0.04, zp=-20> loc("yq")
  %o = dequantize(%y) : f32[2,4,3,3] loc("out")
  output %o
}
"""


def conv_text(activation: str) -> str:
    weights = ", ".join(str(v) for v in RNG.integers(-127, 128, 4 * 27))
    return CONV.replace("WEIGHTS", f"[{weights}]").replace("ACTIVATION", activation)


@pytest.mark.parametrize(
    ("activation", "clamp"),
    [("relu(%c)", [-20, 127]), ("clip(%c) {min=0.0, max=2.0}", [-20, 30]), ("sigmoid(%c)", None)],
)
def test_conv_with_activation_folds_into_one_integer_conv(activation, clamp):
    before, after = fold(conv_text(activation))
    if clamp is None:  # the sigmoid reads the float conv (no QDQ between): both stay float
        assert kinds(after) == kinds(before)
        return
    assert kinds(after) == ["quantize", "conv", "dequantize"]
    conv = next(op for op in after.ops() if op.kind == "conv")
    assert conv.name == "conv1" and conv.outputs == ["y"]
    assert conv.attrs["clamp"] == clamp
    x, w, b = conv.inputs
    assert (x, w) == ("xq", "w")
    bias = after.constants[b]
    assert bias.dtype == np.int32
    # b / (sx * sw[c]), rounded half to even
    np.testing.assert_array_equal(bias, [1000, -250, 133, 8000])
    np.testing.assert_allclose(after.values[b].quant.scale, [5e-4, 1e-3, 7.5e-4, 2.5e-4])
    feeds = {"x": RNG.standard_normal((2, 3, 6, 6)).astype(np.float32) * 3}
    assert_within_one_quantum(before, after, feeds, {"o": 0.04})


ELEMENTWISE = """
module @ops {
  input %a : f32[1,4,4,4]
  input %b : f32[1,4,4,4]
  %aq = quantize(%a) : u8[1,4,4,4] q<scale=0.02, zp=120> loc("aq")
  %bq = quantize(%b) : u8[1,4,4,4] q<scale=0.03, zp=130> loc("bq")
  %ad = dequantize(%aq) : f32[1,4,4,4] loc("ad")
  %bd = dequantize(%bq) : f32[1,4,4,4] loc("bd")
  %s = add(%ad, %bd) : f32[1,4,4,4] loc("add")
  %sq = quantize(%s) : u8[1,4,4,4] q<scale=0.045, zp=128> loc("sq")
  %d = sub(%ad, %bd) : f32[1,4,4,4] loc("sub")
  %dq = quantize(%d) : u8[1,4,4,4] q<scale=0.05, zp=127> loc("dq")
  %sd = dequantize(%sq) : f32[1,4,4,4] loc("sd")
  %mp = max_pool(%sd) {kernel=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1], ceil_mode=0} : f32[1,4,2,2]
  %mpq = quantize(%mp) : u8[1,4,2,2] q<scale=0.045, zp=128> loc("mpq")
  %ap = avg_pool(%sd) {kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], ceil_mode=0, count_include_pad=0} : f32[1,4,4,4]
  %apq = quantize(%ap) : u8[1,4,4,4] q<scale=0.0307, zp=128> loc("apq")
  %r = relu(%sd) : f32[1,4,4,4] loc("relu")
  %rq = quantize(%r) : u8[1,4,4,4] q<scale=0.02, zp=0> loc("rq")
  %dd = dequantize(%dq) : f32[1,4,4,4] loc("dd")
  %rd = dequantize(%rq) : f32[1,4,4,4] loc("rd")
  %cat = concat(%dd, %rd) {axis=1} : f32[1,8,4,4] loc("cat")
  %t = transpose(%cat) {perm=[0, 2, 3, 1]} : f32[1,4,4,8] loc("t")
  %tq = quantize(%t) : u8[1,4,4,8] q<scale=0.05, zp=127> loc("tq")
  %o1 = dequantize(%mpq) : f32[1,4,2,2] loc("o1")
  %o2 = dequantize(%apq) : f32[1,4,4,4] loc("o2")
  %o3 = dequantize(%tq) : f32[1,4,4,8] loc("o3")
  output %o1
  output %o2
  output %o3
}
"""


def test_add_sub_pools_relu_concat_transpose_fold_to_integer_ops():
    before, after = fold(ELEMENTWISE)
    integer = {op.kind for op in after.ops() if after.values[op.outputs[0]].dtype == "u8"}
    assert integer == {
        "quantize",
        "add",
        "sub",
        "max_pool",
        "avg_pool",
        "relu",
        "concat",
        "transpose",
    }
    assert kinds(after).count("dequantize") == 3  # only at the outputs
    feeds = {name: RNG.standard_normal((1, 4, 4, 4)).astype(np.float32) for name in ("a", "b")}
    assert_within_one_quantum(before, after, feeds, {"o1": 0.045, "o2": 0.0307, "o3": 0.05})


def test_add_whose_scales_are_too_far_apart_is_reported():
    """An operand scale 2^30 times the result's is out of range for the integer add; it was
    left float and refused later as 'computes in float between integer layers'."""
    text = """
module @a {
  input %x : f32[1,4]
  %q = quantize(%x) : i8[1,4] q<scale=1.0, zp=0>
  %d = dequantize(%q) : f32[1,4]
  %s = add(%d, %d) : f32[1,4] loc("sum")
  %r = quantize(%s) : i8[1,4] q<scale=9.313225746154785e-10, zp=0>
  %o = dequantize(%r) : f32[1,4]
  output %o
}
"""
    with pytest.raises(CimcError, match=r"op 'sum' \(add\): operand/result scale ratio "
                                        r"\S+ is out of range for add"):
        fold(text)


def test_a_result_read_twice_is_left_float():
    text = conv_text("relu(%c)").replace(
        "  output %o\n", '  %e = sigmoid(%c) : f32[2,4,3,3] loc("e")\n  output %o\n  output %e\n'
    )
    before, after = fold(text)
    assert kinds(after) == kinds(before)


def test_float_weights_are_left_float():
    text = """
module @f {
  input %x : f32[1,2]
  const %w : f32[3,2] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %xq = quantize(%x) : i8[1,2] q<scale=0.1, zp=0> loc("xq")
  %xd = dequantize(%xq) : f32[1,2] loc("xd")
  %g = gemm(%xd, %w) : f32[1,3] loc("g")
  %y = quantize(%g) : i8[1,3] q<scale=0.5, zp=0> loc("y")
  %o = dequantize(%y) : f32[1,3] loc("o")
  output %o
}
"""
    before, after = fold(text)
    assert kinds(after) == kinds(before)


def test_an_i32_bias_in_another_scale_is_rescaled():
    text = """
module @b {
  input %x : f32[1,2]
  const %w : i8[2,2] q<axis=0, scale=[0.5, 0.25], zp=[0, 0]> = [1, 2, 3, 4]
  const %b : i32[2] q<scale=0.01, zp=0> = [100, -37]
  %xq = quantize(%x) : i8[1,2] q<scale=0.1, zp=0> loc("xq")
  %xd = dequantize(%xq) : f32[1,2] loc("xd")
  %wd = dequantize(%w) : f32[2,2] loc("wd")
  %bd = dequantize(%b) : f32[2] loc("bd")
  %g = gemm(%xd, %wd, %bd) : f32[1,2] loc("g")
  %y = quantize(%g) : i8[1,2] q<scale=0.05, zp=0> loc("y")
  %o = dequantize(%y) : f32[1,2] loc("o")
  output %o
}
"""
    _, after = fold(text)
    gemm = next(op for op in after.ops() if op.kind == "gemm")
    # real bias [1.0, -0.37] in the accumulator scales [0.05, 0.025]
    np.testing.assert_array_equal(after.constants[gemm.inputs[2]], [20, -15])


@pytest.mark.torch
@pytest.mark.parametrize("name", ["residual", "separable"])
def test_onnxruntime_qdq_models_become_integer_between_the_boundaries(name):
    import models

    from cimc.frontend.importer import import_onnx
    from cimc.pass_manager import parse_pipeline, run_pipeline

    module = import_onnx(str(models.quantized_model(name, "dynamo", "uint8")))
    run_pipeline(module, parse_pipeline("canonicalize,fold-qdq"))
    ops = list(module.ops())
    assert [op.kind for op in ops if op.kind in ("quantize", "dequantize")] == [
        "quantize",
        "dequantize",
    ]
    assert module.producer(ops[0].inputs[0]) is None  # the quantize reads the model input
    assert ops[-1].outputs == module.outputs  # the dequantize gives the model output
    for op in ops[1:-1]:
        assert module.values[op.outputs[0]].dtype == "u8", op.name


def test_qlinear_operators_fold_back_into_integer_ops_matching_onnxruntime(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cimc.frontend.importer import import_onnx
    from cimc.pass_manager import parse_pipeline, run_pipeline
    from cimc.reference.oracle import ExactOracle

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    initializers = [
        const("xs", np.float32(0.02)), const("xz", np.uint8(128)),
        const("w", RNG.integers(-127, 128, (4, 1, 3, 3)).astype(np.int8)),
        const("ws", (RNG.random(4) * 0.02 + 0.01).astype(np.float32)),
        const("wz", np.zeros(4, np.int8)),
        const("ys", np.float32(0.05)), const("yz", np.uint8(100)),
        const("b", RNG.integers(-500, 500, 4).astype(np.int32)),
        const("m", RNG.integers(-127, 128, (64, 10)).astype(np.int8)),
        const("ms", np.float32(0.01)), const("mz", np.int8(0)),
        const("os", np.float32(0.1)), const("oz", np.uint8(128)),
        const("shape", np.array([1, 64], np.int64)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["yq"],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("MaxPool", ["yq"], ["pq"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["pq", "shape"], ["fq"]),
        helper.make_node("QLinearMatMul", ["fq", "ys", "yz", "m", "ms", "mz", "os", "oz"], ["oq"]),
        helper.make_node("DequantizeLinear", ["oq", "os", "oz"], ["y"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "qlinear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializers,
    )  # fmt: skip
    path = tmp_path / "qlinear.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path
    )

    module = import_onnx(str(path))
    run_pipeline(module, parse_pipeline("canonicalize,fold-qdq"))
    assert kinds(module) == ["quantize", "conv", "max_pool", "reshape", "gemm", "dequantize"]
    x = RNG.standard_normal((8, 1, 8, 8)).astype(np.float32) * 2
    # QLinear kernels: the oracle runs them on onnx's ReferenceEvaluator (exact integers)
    expected = ExactOracle(path).run_samples(x, "x")
    steps = np.abs(run_module(module, {"x": x})["y"] - expected) / 0.1
    assert steps.max() <= 1 + 1e-3
