"""Result shapes the verifier infers (cimc/ir/shapes.py): they agree with onnxruntime
and numpy, and a result of another shape is an error naming op, expected and actual type."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, TensorType
from cimc.ir.shapes import ShapeError, matmul, window_count
from cimc.ir.text import parse_module
from cimc.ir.verifier import OP_KINDS, verify
from cimc.reference.oracle import exact_outputs


def ort_output_shape(node: onnx.NodeProto, x_shape: tuple[int, ...],
                     initializers: tuple[onnx.TensorProto, ...] = ()) -> tuple[int, ...]:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return tuple(exact_outputs(model, {"x": np.zeros(x_shape, np.float32)})[0].shape)


def verified(text: str) -> Module:
    return parse_module(text, "t.cir", verify=True)


def one_op(x: str, op: str, result: str) -> str:
    return f"module @m {{\n  input %x : {x}\n  %y = {op} : {result}\n  output %y\n}}\n"


# (H, kernel, stride, dilation, pad before, pad after)
WINDOWS = [(7, 3, 2, 1, 1, 1), (8, 3, 1, 2, 0, 2), (5, 2, 2, 1, 0, 0), (9, 3, 3, 1, 1, 0),
           (6, 1, 2, 1, 0, 0), (10, 4, 3, 2, 2, 1)]


@pytest.mark.parametrize("h, k, s, d, pb, pa", WINDOWS)
def test_conv_result_height_matches_onnxruntime(h: int, k: int, s: int, d: int, pb: int,
                                                pa: int) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, k, 1], [0.0] * k)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[s, 1], dilations=[d, 1],
                            pads=[pb, 0, pa, 0])
    expected = ort_output_shape(node, (1, 1, h, 1), (w,))[2]
    assert window_count(h, k, s, d, pb, pa) == [expected]


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("h, k, s, d, pb, pa", WINDOWS)
def test_max_pool_result_height_matches_onnxruntime(h: int, k: int, s: int, d: int, pb: int,
                                                    pa: int, ceil_mode: int) -> None:
    if max(pb, pa) >= k:
        pytest.skip("onnxruntime wants pads smaller than the kernel")
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, 1], strides=[s, 1],
                            dilations=[d, 1], pads=[pb, 0, pa, 0], ceil_mode=ceil_mode)
    expected = ort_output_shape(node, (1, 1, h, 1))[2]
    assert expected in window_count(h, k, s, d, pb, pa, bool(ceil_mode))


@pytest.mark.parametrize("h, k, s", [(2, 3, 2), (1, 3, 3), (3, 5, 4)])
def test_ceil_mode_window_larger_than_the_input_matches_onnxruntime(h: int, k: int,
                                                                     s: int) -> None:
    """With ceil_mode a kernel longer than the input by less than a stride still gives a
    window (it was refused as 'does not fit')."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, 1], strides=[s, 1],
                            ceil_mode=1)
    assert window_count(h, k, s, 1, 0, 0, True) == [ort_output_shape(node, (1, 1, h, 1))[2]]


def test_ceil_mode_accepts_onnx_and_onnxruntime_counts() -> None:
    # H=4, k=3, s=2, pads 0/2: onnx's shape inference says 3 windows, onnxruntime 2
    # (its last window would start in the padding). Both are valid results.
    assert window_count(4, 3, 2, 1, 0, 2, ceil_mode=True) == [3, 2]


@pytest.mark.parametrize("a, b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 6)), ((4,), (4, 2)),
                                  ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (4,)), ((4,), (4,))])
def test_matmul_shape_is_numpys(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    expected = np.matmul(np.zeros(a), np.zeros(b)).shape
    got = matmul([TensorType(a, "f32"), TensorType(b, "f32")], {}, TensorType((), "f32"))
    assert got == [expected]


def test_matmul_with_different_k_is_an_error() -> None:
    with pytest.raises(ShapeError, match=r"differ in K \(4 and 5\)"):
        matmul([TensorType((3, 4), "f32"), TensorType((5, 2), "f32")], {}, TensorType((), "f32"))


def test_wrong_relu_result_names_op_expected_and_actual_type() -> None:
    with pytest.raises(CimcError) as info:
        verified(one_op("f32[1,4]", "relu(%x)", "f32[1,5]"))
    assert str(info.value).startswith(
        "t.cir:3:3: error: op 'y' (relu): result %y is f32[1,5], expected f32[1,4]")


CORRECT = [
    ("f32[1,4]", "relu(%x)", "f32[1,4]"),
    ("f32[2,3]", "softmax(%x) {axis=-1}", "f32[2,3]"),
    ("f32[1,3,8,8]", "avg_pool(%x) {kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], "
     "ceil_mode=0, count_include_pad=1}", "f32[1,3,4,4]"),
    ("f32[1,3,5,5]", "max_pool(%x) {kernel=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], "
     "dilations=[1, 1], ceil_mode=1}", "f32[1,3,3,3]"),
    ("f32[1,3,5,6]", "global_max_pool(%x)", "f32[1,3,1,1]"),
    ("f32[1,3,5,6]", "reduce_mean(%x) {axes=[2, 3], keepdims=0}", "f32[1,3]"),
    ("f32[1,3,5,6]", "reduce_mean(%x) {axes=[-1], keepdims=1}", "f32[1,3,5,1]"),
    ("f32[1,3,5,6]", "transpose(%x) {perm=[0, 2, 3, 1]}", "f32[1,5,6,3]"),
    ("f32[1,3,5,6]", "reshape(%x) {shape=[1, 90]}", "f32[1,90]"),
    ("f32[1,3,5,6]", "concat(%x, %x) {axis=-1}", "f32[1,3,5,12]"),
    ("f32[1,3,5,6]", "sum(%x, %x, %x)", "f32[1,3,5,6]"),
    ("f32[2,3]", "quantize(%x)", "i8[2,3] q<scale=0.5, zp=0>"),
]


@pytest.mark.parametrize("x, op, result", CORRECT)
def test_results_of_the_right_shape_verify(x: str, op: str, result: str) -> None:
    verified(one_op(x, op, result))


WRONG = [
    ("f32[1,3,5,6]", "transpose(%x) {perm=[0, 2, 2, 1]}", "f32[1,5,5,3]",
     "perm [0, 2, 2, 1] is not a permutation of the operand's 4 axes"),
    ("f32[1,3,5,6]", "concat(%x, %x) {axis=4}", "f32[1,3,5,12]",
     "axis 4 is outside the operands' rank 4"),
    ("f32[1,3,5,6]", "softmax(%x) {axis=4}", "f32[1,3,5,6]",
     "axis 4 is outside the operand's rank 4"),
    ("f32[1,3,5,6]", "max_pool(%x) {kernel=[2, 2], strides=[0, 1], pads=[0, 0, 0, 0], "
     "dilations=[1, 1], ceil_mode=0}", "f32[1,3,4,5]",
     "attribute 'strides' must be positive, got [0, 1]"),
    ("f32[1,3,2,2]", "max_pool(%x) {kernel=[3, 3], strides=[1, 1], pads=[0, 0, 0, 0], "
     "dilations=[1, 1], ceil_mode=0}", "f32[1,3,1,1]",
     "a window of 3 (dilation 1) does not fit 2 positions padded by 0+0"),
    ("f32[1,3,5,6]", "reduce_mean(%x) {axes=[1, 1], keepdims=0}", "f32[1,5,6]",
     "axes [1, 1] must be distinct axes of [1,3,5,6]"),
    ("f32[3,4]", "global_avg_pool(%x)", "f32[3,4]", "the input must be at least 3-D"),
]


@pytest.mark.parametrize("x, op, result, message", WRONG)
def test_operands_that_give_no_shape_are_named(x: str, op: str, result: str,
                                               message: str) -> None:
    with pytest.raises(CimcError) as info:
        verified(one_op(x, op, result))
    assert message in info.value.message


def test_gemm_with_transposed_operands() -> None:
    m = Module()
    m.add_input("x", TensorType((16, 2), "f32"))
    w = m.add_constant("w", np.zeros((16, 8), np.float32))
    b = m.add_constant("b", np.zeros((1, 8), np.float32))
    m.outputs += m.add_op("gemm", ["x", w, b], [TensorType((2, 8), "f32")],
                          attrs={"trans_a": 1, "trans_b": 0}).outputs
    verify(m)
    m.values[m.outputs[0]] = TensorType((16, 8), "f32")
    with pytest.raises(CimcError, match=r"is f32\[16,8\], expected f32\[2,8\]"):
        verify(m)


def test_grouped_conv_shape() -> None:
    m = Module()
    m.add_input("x", TensorType((1, 4, 6, 6), "f32"))
    w = m.add_constant("w", np.zeros((8, 2, 3, 3), np.float32))
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 2}
    m.outputs += m.add_op("conv", ["x", w], [TensorType((1, 8, 6, 6), "f32")],
                          attrs=attrs).outputs
    verify(m)
    m.op(m.outputs[0]).attrs["group"] = 4
    with pytest.raises(CimcError, match="does not fit input"):
        verify(m)


def test_every_kind_of_the_ir_has_a_shape_rule() -> None:
    documented = ["conv", "gemm", "matmul", "add", "sub", "mul", "relu", "clip", "sigmoid",
                  "tanh", "softmax", "lrn", "batch_norm", "max_pool", "avg_pool",
                  "global_avg_pool", "global_max_pool", "reduce_mean", "concat", "reshape",
                  "transpose", "quantize", "dequantize", "requantize", "matvec", "pool",
                  "eltwise", "rescale", "view"]
    assert [k for k in documented if OP_KINDS[k].shape is None] == []


def test_broadcasting_elementwise_shapes_follow_numpy() -> None:
    for a, b in itertools.product([(1, 4), (3, 1), (4,), (2, 3, 4)], repeat=2):
        m = Module()
        m.add_input("a", TensorType(a, "f32"))
        m.add_input("b", TensorType(b, "f32"))
        try:
            shape = np.broadcast_shapes(a, b)
        except ValueError:
            shape = None
        m.outputs += m.add_op("mul", ["a", "b"], [TensorType(shape or (1,), "f32")]).outputs
        if shape is None:
            with pytest.raises(CimcError, match="do not broadcast"):
                verify(m)
        else:
            verify(m)
