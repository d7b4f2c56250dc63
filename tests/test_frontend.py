"""import-onnx: each ONNX op maps to the IR and computes what the exact oracle computes;
quantized ops keep their quantization; user errors are clear; the model zoo and
torch exports import."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.diagnostics import CimcError
from cimc.frontend.importer import import_onnx
from cimc.ir.module import Module, Quant
from cimc.ir.text import parse_module, print_module
from cimc.ir.verifier import verify
from cimc.passes.canonicalize import Canonicalize
from cimc.reference import run_module
from cimc.reference.oracle import exact_outputs

RNG = np.random.default_rng(0)
ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO_MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
              "shufflenet", "squeezenet", "vgg19", "zfnet512"]


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def save_model(
    path: Path, nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, ...]],
    outputs: list[str], constants: dict[str, np.ndarray] | None = None, opset: int = 18,
    input_types: dict[str, int] | None = None,
) -> str:
    """Write a one-graph model; outputs' types are left to shape inference."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, (input_types or {}).get(n, TensorProto.FLOAT), s)
         for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(a, n) for n, a in (constants or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return str(path)


def onnxruntime_outputs(path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return exact_outputs(path, feeds)


def kinds(module: Module) -> list[str]:
    return [op.kind for op in module.ops()]


def check_against_onnxruntime(path: str, module: Module, feeds: dict[str, np.ndarray],
                              atol: float = 1e-5) -> None:
    """Canonicalize a copy of `module` and compare its reference outputs with onnxruntime."""
    canonical = parse_module(print_module(module))
    Canonicalize().apply(canonical)
    verify(canonical)
    got = run_module(canonical, feeds)
    for name, want in zip(canonical.outputs, onnxruntime_outputs(path, feeds), strict=True):
        assert got[name].shape == want.shape
        np.testing.assert_allclose(got[name], want, atol=atol, rtol=1e-5)


@dataclass
class OpCase:
    """One ONNX node (plus constants) and the IR op kinds it must become."""

    node: onnx.NodeProto
    kinds: list[str]
    inputs: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"x": (1, 4, 6, 6)})
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 18
    attrs: dict[str, object] = field(default_factory=dict)


def node(op: str, inputs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, ["y"], name=f"the_{op.lower()}", **attrs)


X2 = {"x": (2, 5)}
OP_CASES: dict[str, OpCase] = {
    "conv": OpCase(node("Conv", ["x", "w", "b"], pads=[1, 0, 1, 2], strides=[2, 1]), ["conv"],
                   constants={"w": f32(8, 4, 3, 3), "b": f32(8)},
                   attrs={"pads": [1, 0, 1, 2], "strides": [2, 1], "dilations": [1, 1],
                          "group": 1}),
    "conv_same_upper": OpCase(node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2]),
                              ["conv"], constants={"w": f32(4, 4, 2, 2)},
                              attrs={"pads": [0, 0, 0, 0]}),
    "conv_same_lower": OpCase(node("Conv", ["x", "w"], auto_pad="SAME_LOWER"), ["conv"],
                              constants={"w": f32(4, 4, 2, 2)}, attrs={"pads": [1, 1, 0, 0]}),
    "depthwise_conv": OpCase(node("Conv", ["x", "w"], group=4, dilations=[2, 2]), ["conv"],
                             constants={"w": f32(4, 1, 3, 3)}, attrs={"group": 4}),
    "gemm": OpCase(node("Gemm", ["x", "w", "c"], transB=1), ["gemm"], X2,
                   {"w": f32(3, 5), "c": f32(3)}),
    "gemm_onnx_forms": OpCase(
        node("Gemm", ["x", "w", "c"], transA=1, alpha=0.5, beta=2.0), ["gemm"], {"x": (5, 2)},
        {"w": f32(5, 3), "c": f32(1, 3)},
        attrs={"trans_a": 1, "trans_b": 0, "alpha": 0.5, "beta": 2.0}),
    "matmul": OpCase(node("MatMul", ["x", "w"]), ["matmul"], X2, {"w": f32(5, 3)}),
    "add": OpCase(node("Add", ["x", "c"]), ["add"], constants={"c": f32(4, 1, 1)}),
    "sub": OpCase(node("Sub", ["x", "c"]), ["sub"], constants={"c": f32(6)}),
    "mul": OpCase(node("Mul", ["c", "x"]), ["mul"], constants={"c": f32(1, 4, 1, 1)}),
    "sum": OpCase(node("Sum", ["x", "c", "x"]), ["sum"], constants={"c": f32(4, 1, 1)}),
    "relu": OpCase(node("Relu", ["x"]), ["relu"]),
    "clip_inputs": OpCase(node("Clip", ["x", "lo", "hi"]), ["clip"],
                          constants={"lo": np.float32(0.0), "hi": np.float32(6.0)},
                          attrs={"min": 0.0, "max": 6.0}),
    "clip_max_only": OpCase(node("Clip", ["x", "", "hi"]), ["clip"],
                            constants={"hi": np.float32(0.5)},
                            attrs={"min": float(-np.finfo(np.float32).max), "max": 0.5}),
    "clip_attributes_opset_10": OpCase(node("Clip", ["x"], min=-0.5, max=0.25), ["clip"],
                                       opset=10, attrs={"min": -0.5, "max": 0.25}),
    "sigmoid": OpCase(node("Sigmoid", ["x"]), ["sigmoid"]),
    "tanh": OpCase(node("Tanh", ["x"]), ["tanh"]),
    "softmax": OpCase(node("Softmax", ["x"]), ["softmax"], X2, attrs={"axis": 1}),
    "lrn": OpCase(node("LRN", ["x"], size=3, alpha=0.001), ["lrn"],
                  attrs={"size": 3, "alpha": 0.001, "beta": 0.75, "bias": 1.0}),
    "batch_norm": OpCase(node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3),
                         ["batch_norm"],
                         constants={"s": f32(4), "b": f32(4), "m": f32(4),
                                    "v": np.abs(f32(4)) + 0.5}),
    "max_pool": OpCase(node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 1, 1, 1], ceil_mode=1), ["max_pool"],
                       attrs={"kernel": [3, 3], "ceil_mode": 1, "pads": [1, 1, 1, 1]}),
    "avg_pool": OpCase(node("AveragePool", ["x"], kernel_shape=[2, 2], pads=[1, 1, 0, 0],
                            count_include_pad=1), ["avg_pool"],
                       attrs={"count_include_pad": 1, "strides": [1, 1]}),
    "global_avg_pool": OpCase(node("GlobalAveragePool", ["x"]), ["global_avg_pool"]),
    "global_max_pool": OpCase(node("GlobalMaxPool", ["x"]), ["global_max_pool"]),
    "reduce_mean_axes_input": OpCase(node("ReduceMean", ["x", "axes"]), ["reduce_mean"],
                                     constants={"axes": np.array([-1, 2], np.int64)},
                                     attrs={"axes": [2, 3], "keepdims": 1}),
    "reduce_mean_axes_attribute": OpCase(node("ReduceMean", ["x"], axes=[1], keepdims=0),
                                         ["reduce_mean"], opset=13,
                                         attrs={"axes": [1], "keepdims": 0}),
    "concat": OpCase(node("Concat", ["x", "x"], axis=-3), ["concat"], attrs={"axis": 1}),
    "reshape": OpCase(node("Reshape", ["x", "shape"]), ["reshape"],
                      constants={"shape": np.array([0, -1], np.int64)},
                      attrs={"shape": [1, 144]}),
    "flatten": OpCase(node("Flatten", ["x"], axis=2), ["reshape"], attrs={"shape": [4, 36]}),
    "transpose": OpCase(node("Transpose", ["x"], perm=[0, 2, 3, 1]), ["transpose"],
                        attrs={"perm": [0, 2, 3, 1]}),
    "squeeze": OpCase(node("Squeeze", ["x", "axes"]), ["reshape"],
                      constants={"axes": np.array([0], np.int64)}, attrs={"shape": [4, 6, 6]}),
    "unsqueeze": OpCase(node("Unsqueeze", ["x", "axes"]), ["reshape"], X2,
                        constants={"axes": np.array([1], np.int64)}, attrs={"shape": [2, 1, 5]}),
    "identity": OpCase(node("Identity", ["x"]), ["identity"]),
    "dropout": OpCase(node("Dropout", ["x"]), ["identity"]),
}


@pytest.mark.parametrize("case_name", sorted(OP_CASES))
def test_onnx_op_imports_as_ir_op_and_matches_onnxruntime(tmp_path: Path, case_name: str) -> None:
    case = OP_CASES[case_name]
    path = save_model(tmp_path / "m.onnx", [case.node], case.inputs, ["y"], case.constants,
                      case.opset)
    module = import_onnx(path)
    verify(module)
    assert kinds(module) == case.kinds
    op = next(iter(module.ops()))
    assert op.name == case.node.name
    for key, value in case.attrs.items():
        assert op.attrs[key] == value, key
    feeds = {name: f32(*shape) for name, shape in case.inputs.items()}
    check_against_onnxruntime(path, module, feeds)


def test_constant_node_becomes_constant(tmp_path: Path) -> None:
    value = f32(4, 1, 1)
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(value)),
             node("Add", ["x", "c"])]
    module = import_onnx(save_model(tmp_path / "m.onnx", nodes, {"x": (1, 4, 6, 6)}, ["y"]))
    (op,) = module.ops()
    np.testing.assert_array_equal(module.constants[op.inputs[1]], value)


def test_unnamed_nodes_are_named_after_their_op_type(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    module = import_onnx(save_model(tmp_path / "m.onnx", nodes, {"x": (1, 4)}, ["y"]))
    assert [op.name for op in module.ops()] == ["Relu_0", "Relu_1"]
    assert [op.outputs for op in module.ops()] == [["r"], ["y"]]


def test_shape_computation_is_folded(tmp_path: Path) -> None:
    # Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as torch exporters write flatten.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    constants = {"zero": np.array(0, np.int64), "zero_axes": np.array([0], np.int64),
                 "minus_one": np.array([-1], np.int64)}
    module = import_onnx(save_model(tmp_path / "m.onnx", nodes, {"x": (2, 3, 4)}, ["y"],
                                    constants))
    assert kinds(module) == ["reshape"]
    assert module.values["y"].shape == (2, 12)
    assert not module.constants


# ---- quantized models -----------------------------------------------------------------
def quant_constants(w: np.ndarray) -> dict[str, np.ndarray]:
    return {"xs": np.float32(0.05), "xz": np.int8(3), "ws": np.abs(f32(w.shape[0])) / 50 + 0.01,
            "wz": np.zeros(w.shape[0], np.int8), "w": w}


def test_qdq_conv_keeps_integer_weights_with_per_axis_quant(tmp_path: Path) -> None:
    w = RNG.integers(-127, 128, (8, 4, 3, 3)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=-4, name="dqw"),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1], name="conv"),
    ]
    constants = quant_constants(w)
    path = save_model(tmp_path / "m.onnx", nodes, {"x": (1, 4, 6, 6)}, ["y"], constants)
    module = import_onnx(path)
    verify(module)
    assert kinds(module) == ["quantize", "dequantize", "dequantize", "conv"]
    assert module.values["xq"].dtype == "i8"
    assert module.values["xq"].quant == Quant((0.05000000074505806,), (3,))
    weight = module.values["w"]
    assert weight.dtype == "i8" and module.constants["w"].dtype == np.int8
    assert weight.quant is not None and weight.quant.axis == 0
    assert weight.quant.scale == tuple(float(s) for s in constants["ws"])
    assert module.op("dqw").inputs == ["w"]
    check_against_onnxruntime(path, module, {"x": f32(1, 4, 6, 6)})


def qlinear_model(tmp_path: Path, op: str) -> str:
    """x -> QuantizeLinear -> `op` -> DequantizeLinear, with uint8 activations."""
    common = {"xs": np.float32(0.04), "xz": np.uint8(128), "ys": np.float32(0.2),
              "yz": np.uint8(120)}
    if op == "QLinearConv":
        w = RNG.integers(-100, 100, (6, 4, 3, 3)).astype(np.int8)
        ws = (np.abs(f32(6)) / 100 + 0.005).astype(np.float32)
        constants = {**common, "w": w, "ws": ws, "wz": np.zeros(6, np.int8),
                     "b": RNG.integers(-500, 500, 6).astype(np.int32)}
        inputs = ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
        attrs = {"pads": [1, 1, 1, 1], "strides": [1, 2]}
        shape: tuple[int, ...] = (1, 4, 6, 6)
    else:
        w = RNG.integers(-100, 100, (5, 3)).astype(np.int8)
        constants = {**common, "w": w, "ws": np.float32(0.01), "wz": np.int8(0)}
        inputs, attrs, shape = ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], {}, (2, 5)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q"),
        helper.make_node(op, inputs, ["yq"], name="the_op", **attrs),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dq"),
    ]
    return save_model(tmp_path / "m.onnx", nodes, {"x": shape}, ["y"], constants)


@pytest.mark.parametrize("op,inner", [("QLinearConv", "conv"), ("QLinearMatMul", "matmul")])
def test_qlinear_ops_become_dequantize_op_quantize(tmp_path: Path, op: str, inner: str) -> None:
    path = qlinear_model(tmp_path, op)
    module = import_onnx(path)
    verify(module)
    dequantized = ["dequantize"] * (3 if op == "QLinearConv" else 2)
    assert kinds(module) == ["quantize", *dequantized, inner, "quantize", "dequantize"]
    assert module.op("the_op").kind == inner
    result = module.values["yq"]
    assert result.dtype == "u8" and result.quant == Quant((0.20000000298023224,), (120,))
    if op == "QLinearConv":
        bias = module.values["b"]
        assert bias.dtype == "i32" and bias.quant is not None and bias.quant.axis == 0
        assert bias.quant.scale[0] == float(np.float32(0.04) * module.values["w"].quant.scale[0])
    x = f32(*module.values["x"].shape)
    # Float evaluation of the QDQ pattern vs onnxruntime's integer kernel: one quantum.
    check_against_onnxruntime(path, module, {"x": x}, atol=0.2 + 1e-6)


@pytest.mark.parametrize("op", ["ConvInteger", "MatMulInteger"])
def test_integer_ops_become_unscaled_qdq_pattern(tmp_path: Path, op: str) -> None:
    if op == "ConvInteger":
        w, shape = RNG.integers(0, 255, (3, 2, 3, 3)).astype(np.uint8), (1, 2, 5, 5)
    else:
        w, shape = RNG.integers(0, 255, (4, 3)).astype(np.uint8), (2, 4)
    nodes = [helper.make_node(op, ["x", "w", "xz", "wz"], ["acc"], name="the_op"),
             helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT, name="cast")]
    constants = {"w": w, "xz": np.uint8(100), "wz": np.uint8(120)}
    path = save_model(tmp_path / "m.onnx", nodes, {"x": shape}, ["y"], constants,
                      input_types={"x": TensorProto.UINT8})
    module = import_onnx(path)
    verify(module)
    inner = "conv" if op == "ConvInteger" else "matmul"
    assert kinds(module) == ["dequantize", "dequantize", inner, "quantize", "dequantize"]
    assert module.values["x"].quant == Quant((1.0,), (100,))
    assert module.values["acc"].dtype == "i32" and module.values["acc"].quant == Quant((1.0,), (0,))
    x = RNG.integers(0, 255, shape).astype(np.uint8)
    check_against_onnxruntime(path, module, {"x": x}, atol=0)


# ---- errors ---------------------------------------------------------------------------
def relu_model(tmp_path: Path, shape: list[object]) -> str:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return str(path)


def test_model_whose_inputs_all_have_initializers_has_no_inputs(tmp_path: Path) -> None:
    """An initializer of an input's name makes it a constant; with no input left the
    program would read nothing (the backend crashed on the constant image)."""
    model = onnx.load(relu_model(tmp_path, [1, 4]))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, 4), np.float32), "x"))
    onnx.save(model, tmp_path / "constant.onnx")
    with pytest.raises(CimcError, match=r"constant\.onnx: the model has no inputs: input 'x' "
                                        "has an initializer"):
        import_onnx(str(tmp_path / "constant.onnx"))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CimcError, match="nothere.onnx: no such file"):
        import_onnx(str(tmp_path / "nothere.onnx"))


def test_truncated_file_is_not_a_valid_model(tmp_path: Path) -> None:
    whole = Path(qlinear_model(tmp_path, "QLinearConv")).read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CimcError, match=r"cut\.onnx: not a valid ONNX model"):
        import_onnx(str(cut))


def test_checker_complaint_names_the_file(tmp_path: Path) -> None:
    graph = helper.make_graph([node("Relu", ["nowhere"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(CimcError, match=r"bad\.onnx: the ONNX checker rejects this model:.*"
                                        "nowhere"):
        import_onnx(str(tmp_path / "bad.onnx"))


def test_every_unsupported_node_is_listed_in_one_error(tmp_path: Path) -> None:
    nodes = [helper.make_node("Sin", ["x"], ["e"], name="first_bad"),
             helper.make_node("Relu", ["e"], ["r"], name="fine"),
             helper.make_node("Floor", ["r"], ["y"], name="second_bad")]
    path = save_model(tmp_path / "m.onnx", nodes, {"x": (1, 4)}, ["y"])
    with pytest.raises(CimcError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "2 node(s) use operators cimc does not support" in message
    assert "node 'first_bad': Sin" in message and "node 'second_bad': Floor" in message
    assert "'fine'" not in message and "rewrite the model" in message


def test_dynamic_input_needs_input_shape(tmp_path: Path) -> None:
    path = relu_model(tmp_path, ["batch", 3, 8])
    with pytest.raises(CimcError, match=r"input 'x' has a dynamic dimension 0 \('batch'\).*"
                                        r"--input-shape x="):
        import_onnx(path)
    module = import_onnx(path, {"x": (2, 3, 8)})
    assert module.values["x"].shape == (2, 3, 8) and module.values["y"].shape == (2, 3, 8)


@pytest.mark.parametrize("shapes,message", [
    ({"nope": (1, 3, 8)}, "'nope', which is not an input of the model; its inputs are: x"),
    ({"x": (1, 8)}, "has 2 dimensions but input 'x' has 3"),
    ({"x": (1, 4, 8)}, "sets dimension 1 to 4 but the model fixes it to 3"),
])
def test_bad_input_shapes_are_explained(tmp_path: Path, shapes: dict[str, tuple[int, ...]],
                                        message: str) -> None:
    with pytest.raises(CimcError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_onnx(relu_model(tmp_path, ["batch", 3, 8]), shapes)


def test_runtime_reshape_shape_is_a_clear_error(tmp_path: Path) -> None:
    nodes = [node("Reshape", ["x", "shape"])]
    path = save_model(tmp_path / "m.onnx", nodes, {"x": (2, 6), "shape": (2,)}, ["y"],
                      input_types={"shape": TensorProto.INT64})
    with pytest.raises(CimcError, match=r"node 'the_reshape' \(Reshape\): the shape of 'y' .*"
                                        "not fully static"):
        import_onnx(path)


# ---- whole models ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_model_zoo_graph_imports_canonicalizes_and_round_trips(name: str) -> None:
    module = import_onnx(str(ZOO / f"light_{name}.onnx"))
    verify(module)
    Canonicalize().apply(module)
    verify(module)
    counts = collections.Counter(kinds(module))
    assert counts["conv"] > 0
    assert not {"batch_norm", "sum", "identity", "dropout"} & set(counts)
    text = print_module(module)
    assert print_module(parse_module(text)) == text


# The three that take a second or less run by default (BN folding, sum, channel shuffle).
FAST_ZOO = ("resnet50", "shufflenet", "squeezenet")


@pytest.mark.parametrize("name", [
    name if name in FAST_ZOO else pytest.param(name, marks=pytest.mark.slow)
    for name in ZOO_MODELS
])
def test_model_zoo_graph_matches_onnxruntime(name: str) -> None:
    path = str(ZOO / f"light_{name}.onnx")
    module = import_onnx(path)
    x = RNG.random((1, 3, 224, 224), dtype=np.float32)
    check_against_onnxruntime(path, module, {module.inputs[0]: x}, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", ["residual", "separable", "mlp"])
def test_torch_exports_import(name: str, exporter: str) -> None:
    models = pytest.importorskip("models")
    path = str(models.float_model(name, exporter))
    module = import_onnx(path)
    verify(module)
    check_against_onnxruntime(path, module, {"input": models.sample_inputs(name, 1, 1)})


@pytest.mark.torch
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_torch_qdq_exports_import(activations: str) -> None:
    models = pytest.importorskip("models")
    path = str(models.quantized_model("residual", "dynamo", activations))
    module = import_onnx(path)
    verify(module)
    counts = collections.Counter(kinds(module))
    assert counts["quantize"] > 0 and counts["dequantize"] > counts["quantize"]
    weights = [module.values[v] for op in module.ops() if op.kind == "dequantize"
               for v in op.inputs if module.is_constant(v) and module.values[v].dtype == "i8"]
    assert weights and all(w.quant is not None for w in weights)
    x = models.sample_inputs("residual", 1, 2)
    check_against_onnxruntime(path, module, {"input": x}, atol=1e-6)



@pytest.mark.torch
def test_torch_export_with_dynamic_batch_imports_once_pinned(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 6 * 6, 5)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc(y.view(y.size(0), -1))  # Shape -> Gather -> Concat -> Reshape

    path = str(tmp_path / "dynamic.onnx")
    torch.onnx.export(Net().eval(), (torch.zeros(2, 3, 8, 8),), path, opset_version=13,
                      dynamo=False, input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    assert "Shape" in [node.op_type for node in onnx.load(path).graph.node]
    with pytest.raises(CimcError, match="--input-shape input="):
        import_onnx(path)
    module = import_onnx(path, {"input": (3, 3, 8, 8)})
    assert kinds(module) == ["conv", "relu", "reshape", "gemm"]
    check_against_onnxruntime(path, module, {"input": f32(3, 3, 8, 8)})


def test_large_int8_weights_come_through_import_unchanged_and_int8() -> None:
    """Weights of more than LARGE_CONSTANT elements are set aside from the protobuf while
    the opset is converted and shapes inferred, and come back with their values, int8."""
    from cimc.frontend.importer import LARGE_CONSTANT

    path = Path(__file__).resolve().parent.parent / "examples" / "mnist" / "mnist_cnn_qdq.onnx"
    large = [i for i in onnx.load(path).graph.initializer if np.prod(i.dims) > LARGE_CONSTANT]
    assert large  # the classifier's 10 x 784 weights
    module = import_onnx(str(path))
    for init in large:
        assert module.constants[init.name].dtype == np.int8
        np.testing.assert_array_equal(module.constants[init.name], numpy_helper.to_array(init))
    assert not set(module.inputs) & {i.name for i in large}


@pytest.mark.parametrize("listed_as_input", [False, True])
def test_large_float_weights_import_and_compute_as_onnxruntime(
        tmp_path: Path, listed_as_input: bool) -> None:
    """A float MatMul over 100 x 60 weights (set aside at import), also when the model
    lists its initializers as graph inputs as IR version 3 does."""
    rng = np.random.default_rng(3)
    weights = numpy_helper.from_array(rng.standard_normal((100, 60)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(60).astype(np.float32), "b")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 100])]
    if listed_as_input:
        inputs += [helper.make_tensor_value_info("w", TensorProto.FLOAT, [100, 60]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [60])]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
         helper.make_node("Add", ["m", "b"], ["y"], name="add")], "g", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 60])], [weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if listed_as_input:
        model.ir_version = 3
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    module = import_onnx(str(path))
    assert module.inputs == ["x"]
    x = rng.standard_normal((1, 100)).astype(np.float32)
    got = run_module(module, {"x": x})["y"]
    np.testing.assert_allclose(got, exact_outputs(path, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_a_qdq_model_imports_without_loading_onnxruntime() -> None:
    """Nothing of an int8 QDQ model is for graphsurgeon to fold (DequantizeLinear of the
    weights stays), so onnxruntime is not imported: 50 ms and 20 MB less."""
    import subprocess
    import sys

    path = Path(__file__).resolve().parent.parent / "examples" / "mnist" / "mnist_cnn_qdq.onnx"
    code = ("import sys, cimc; cimc.prepare(sys.argv[1]); "
            "print('onnxruntime' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "False"
