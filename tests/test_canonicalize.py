"""canonicalize: each rewrite gives the expected structure and keeps the values
the exact oracle computes on the original model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cimc.frontend.importer import import_onnx
from cimc.ir.module import Module, Quant
from cimc.ir.text import parse_module, print_module
from cimc.ir.verifier import verify
from cimc.passes.canonicalize import Canonicalize
from cimc.reference import run_module
from cimc.reference.oracle import exact_outputs

RNG = np.random.default_rng(1)
ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def positive(*shape: int) -> np.ndarray:
    return (np.abs(f32(*shape)) + 0.5).astype(np.float32)


def n(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    """A node named after its output, in capitals (ops and values share one namespace)."""
    return helper.make_node(op, inputs, [output], name=output.upper(), **attrs)


class Case:
    """An inline ONNX model, imported and canonicalized."""

    def __init__(self, tmp_path: Path, nodes: list[onnx.NodeProto], inputs: dict[str, tuple],
                 constants: dict[str, np.ndarray], outputs: tuple[str, ...] = ("y",)) -> None:
        graph = helper.make_graph(
            nodes, "case",
            [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            initializer=[numpy_helper.from_array(a, k) for k, a in constants.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        self.path = str(tmp_path / "case.onnx")
        onnx.save(onnx.shape_inference.infer_shapes(model), self.path)
        self.inputs = inputs
        self.module: Module = import_onnx(self.path)
        Canonicalize().apply(self.module)
        verify(self.module)

    @property
    def kinds(self) -> list[str]:
        return [op.kind for op in self.module.ops()]

    def assert_matches_onnxruntime(self, atol: float = 1e-5) -> None:
        feeds = {k: f32(*s) for k, s in self.inputs.items()}
        want = exact_outputs(self.path, feeds)
        got = run_module(self.module, feeds)
        for name, expected in zip(self.module.outputs, want, strict=True):
            np.testing.assert_allclose(got[name], expected, atol=atol, rtol=1e-5)


def bn_constants(channels: int, prefix: str = "") -> dict[str, np.ndarray]:
    return {f"{prefix}s": f32(channels), f"{prefix}b": f32(channels),
            f"{prefix}m": f32(channels), f"{prefix}v": positive(channels)}


X = {"x": (1, 3, 6, 6)}


def test_batch_norm_folds_into_the_conv_before_it(tmp_path: Path) -> None:
    w = f32(4, 3, 3, 3)
    case = Case(tmp_path, [n("Conv", ["x", "w", "cb"], "c", pads=[1, 1, 1, 1]),
                           n("BatchNormalization", ["c", "s", "b", "m", "v"], "y", epsilon=1e-3)],
                X, {"w": w, "cb": f32(4), **bn_constants(4)})
    assert case.kinds == ["conv"]
    conv = next(case.module.ops())
    assert conv.name == "C" and len(conv.inputs) == 3
    assert not np.allclose(case.module.constants[conv.inputs[1]], w)
    case.assert_matches_onnxruntime()


def test_batch_norm_folds_into_a_bias_free_gemm(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Gemm", ["x", "w"], "g", transB=1),
                           n("BatchNormalization", ["g", "s", "b", "m", "v"], "y")],
                {"x": (2, 5)}, {"w": f32(3, 5), **bn_constants(3)})
    assert case.kinds == ["gemm"]
    assert case.module.values[next(case.module.ops()).inputs[2]].shape == (3,)
    case.assert_matches_onnxruntime()


def test_batch_norm_after_a_non_conv_becomes_channel_mul_and_add(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Relu", ["x"], "r"),
                           n("BatchNormalization", ["r", "s", "b", "m", "v"], "y")],
                X, bn_constants(3))
    assert case.kinds == ["relu", "mul", "add"]
    mul = case.module.op(next(op.name for op in case.module.ops() if op.kind == "mul"))
    assert case.module.values[mul.inputs[1]].shape == (3, 1, 1)
    case.assert_matches_onnxruntime()


def test_conv_read_twice_keeps_its_weights(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Conv", ["x", "w"], "c"),
                           n("BatchNormalization", ["c", "s", "b", "m", "v"], "y"),
                           n("Relu", ["c"], "z")],
                X, {"w": f32(4, 3, 1, 1), **bn_constants(4)}, outputs=("y", "z"))
    assert sorted(case.kinds) == ["add", "conv", "mul", "relu"]
    conv = case.module.op("C")
    np.testing.assert_array_equal(case.module.constants[conv.inputs[1]],
                                  numpy_helper.to_array(onnx.load(case.path).graph.initializer[0]))
    case.assert_matches_onnxruntime()


def test_channel_scale_and_shift_after_conv_fold_into_it(tmp_path: Path) -> None:
    # The way densenet121 and inception_v2 spell the affine part of batch norm.
    case = Case(tmp_path, [n("Conv", ["x", "w"], "c"),
                           n("BatchNormalization", ["c", "s", "b", "m", "v"], "bn"),
                           n("Mul", ["k", "bn"], "scaled"), n("Add", ["scaled", "t"], "y")],
                X, {"w": f32(4, 3, 3, 3), "k": f32(4, 1, 1), "t": f32(1, 4, 1, 1),
                    **bn_constants(4)})
    assert case.kinds == ["conv"]
    case.assert_matches_onnxruntime()


def test_spatial_scale_does_not_fold_into_conv(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Conv", ["x", "w"], "c"), n("Mul", ["c", "k"], "y")],
                X, {"w": f32(4, 3, 3, 3), "k": f32(1, 1, 4, 4)})
    assert case.kinds == ["conv", "mul"]
    case.assert_matches_onnxruntime()


def test_affine_chain_merges_into_one_mul_and_one_add(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Relu", ["x"], "r"), n("Mul", ["r", "a"], "m1"),
                           n("Add", ["m1", "b"], "a1"), n("Mul", ["a1", "c"], "m2"),
                           n("Add", ["d", "m2"], "a2"), n("Sub", ["a2", "e"], "y")],
                X, {"a": f32(3, 1, 1), "b": f32(3, 1, 1), "c": f32(1, 3, 1, 1),
                    "d": f32(3, 1, 1), "e": f32(1)})
    assert case.kinds == ["relu", "mul", "add"]
    case.assert_matches_onnxruntime()


def test_sum_becomes_a_chain_of_adds(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Sum", ["x", "p", "q", "x"], "y")],
                {"x": (1, 3, 6, 6), "p": (3, 1, 1), "q": (6,)}, {})
    assert case.kinds == ["add", "add", "add"]
    last = case.module.producer("y")
    assert last is not None and last.name == "Y"  # the last add keeps the node's name
    case.assert_matches_onnxruntime()


def test_identity_and_dropout_disappear(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Relu", ["x"], "r"), n("Identity", ["r"], "i"),
                           n("Dropout", ["i"], "d"), n("Sigmoid", ["d"], "y")], X, {})
    assert case.kinds == ["relu", "sigmoid"]
    assert case.module.op("Y").inputs == ["r"]
    case.assert_matches_onnxruntime()


def test_reshape_chains_merge_and_no_op_reshapes_go(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Reshape", ["x", "s1"], "a"), n("Flatten", ["a"], "b", axis=0),
                           n("Reshape", ["b", "s2"], "c"), n("Transpose", ["c"], "y", perm=[0, 1])],
                X, {"s1": np.array([3, 36], np.int64), "s2": np.array([1, 108], np.int64)})
    assert case.kinds == ["reshape"]
    (op,) = case.module.ops()
    assert op.inputs == ["x"] and op.attrs["shape"] == [1, 108]
    case.assert_matches_onnxruntime()


def test_reduce_mean_over_height_and_width_is_global_average_pool(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("ReduceMean", ["x", "hw"], "p"),
                           n("ReduceMean", ["x", "hw"], "q", keepdims=0),
                           n("ReduceMean", ["x", "c"], "y")],
                X, {"hw": np.array([2, 3], np.int64), "c": np.array([1], np.int64)},
                outputs=("p", "q", "y"))
    assert sorted(case.kinds) == ["global_avg_pool", "global_avg_pool", "reduce_mean", "reshape"]
    assert case.module.op("P").kind == "global_avg_pool"
    assert case.module.values["q"].shape == (1, 3)
    case.assert_matches_onnxruntime()


def test_gemm_transposes_and_scales_normalize(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Gemm", ["x", "w", "c"], "y", transA=1, alpha=0.5, beta=2.0)],
                {"x": (5, 2)}, {"w": f32(5, 3), "c": f32(1, 3)})
    assert case.kinds == ["transpose", "gemm"]
    gemm = case.module.op("Y")
    assert gemm.attrs == {}
    assert [case.module.values[v].shape for v in gemm.inputs] == [(2, 5), (3, 5), (3,)]
    case.assert_matches_onnxruntime()


def test_gemm_bias_varying_by_row_becomes_an_add(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("Gemm", ["x", "w", "c"], "y", transB=1)],
                {"x": (2, 5)}, {"w": f32(3, 5), "c": f32(2, 3)})
    assert case.kinds == ["gemm", "add"]
    case.assert_matches_onnxruntime()


def test_matmul_by_constant_plus_bias_is_one_gemm(tmp_path: Path) -> None:
    w = f32(5, 3)
    case = Case(tmp_path, [n("MatMul", ["x", "w"], "mm"), n("Add", ["mm", "b"], "y")],
                {"x": (2, 5)}, {"w": w, "b": f32(3)})
    assert case.kinds == ["gemm"]
    gemm = case.module.op("MM")
    np.testing.assert_array_equal(case.module.constants[gemm.inputs[1]], w.T)
    assert case.module.values[gemm.inputs[2]].shape == (3,)
    case.assert_matches_onnxruntime()


def test_batched_matmul_by_constant_is_reshape_gemm_reshape(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("MatMul", ["x", "w"], "y")], {"x": (2, 4, 5)}, {"w": f32(5, 3)})
    assert case.kinds == ["reshape", "gemm", "reshape"]
    case.assert_matches_onnxruntime()


def test_matmul_of_two_runtime_tensors_stays(tmp_path: Path) -> None:
    case = Case(tmp_path, [n("MatMul", ["x", "z"], "y")], {"x": (2, 5), "z": (5, 3)}, {})
    assert case.kinds == ["matmul"]


def test_qdq_matmul_weight_is_transposed_as_integers(tmp_path: Path) -> None:
    w = RNG.integers(-127, 128, (5, 3)).astype(np.int8)
    scales = positive(3) / 100
    nodes = [n("QuantizeLinear", ["x", "xs", "xz"], "xq"),
             n("DequantizeLinear", ["xq", "xs", "xz"], "xd"),
             n("DequantizeLinear", ["w", "ws", "wz"], "wd", axis=1),
             n("MatMul", ["xd", "wd"], "y")]
    constants = {"xs": np.float32(0.02), "xz": np.int8(0), "w": w, "ws": scales,
                 "wz": np.zeros(3, np.int8)}
    case = Case(tmp_path, nodes, {"x": (2, 5)}, constants)
    assert case.kinds == ["quantize", "dequantize", "dequantize", "gemm"]
    gemm = case.module.op("Y")
    weight = case.module.producer(gemm.inputs[1])
    assert weight is not None and weight.kind == "dequantize"
    (integers,) = weight.inputs
    np.testing.assert_array_equal(case.module.constants[integers], w.T)
    assert case.module.values[integers].quant == Quant(tuple(float(s) for s in scales),
                                                       (0, 0, 0), 0)
    case.assert_matches_onnxruntime()


def test_qdq_conv_is_left_alone(tmp_path: Path) -> None:
    nodes = [n("QuantizeLinear", ["x", "xs", "xz"], "xq"),
             n("DequantizeLinear", ["xq", "xs", "xz"], "xd"),
             n("DequantizeLinear", ["w", "ws", "wz"], "wd", axis=0),
             n("Conv", ["xd", "wd"], "c"), n("QuantizeLinear", ["c", "ys", "xz"], "cq"),
             n("DequantizeLinear", ["cq", "ys", "xz"], "y")]
    constants = {"xs": np.float32(0.02), "xz": np.int8(0), "ys": np.float32(0.1),
                 "w": RNG.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8),
                 "ws": positive(4) / 100, "wz": np.zeros(4, np.int8)}
    case = Case(tmp_path, nodes, X, constants)
    before = print_module(import_onnx(case.path))
    assert print_module(case.module) == before
    case.assert_matches_onnxruntime()


def test_canonicalize_reaches_a_fixed_point() -> None:
    module = import_onnx(str(ZOO / "light_shufflenet.onnx"))
    Canonicalize().apply(module)
    once = print_module(module)
    again = parse_module(once)
    Canonicalize().apply(again)
    assert print_module(again) == once


def test_dropping_an_identity_keeps_the_model_outputs_names(tmp_path: Path) -> None:
    """Conv -> Dropout -> 'logits' and an identity Transpose of the input -> 'same': the
    results are still called 'logits' and 'same', in the IR and in `cimc run`'s file."""
    from cimc.cli import main

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("Dropout", ["c"], ["logits"]),
         helper.make_node("Transpose", ["x"], ["same"], perm=[0, 1, 2, 3])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2, 4, 4))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, (1, 3, 4, 4)),
         helper.make_tensor_value_info("same", TensorProto.FLOAT, (1, 2, 4, 4))],
        initializer=[numpy_helper.from_array(f32(3, 2, 1, 1), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "m.onnx")
    module = import_onnx(tmp_path / "m.onnx")
    Canonicalize().apply(module)
    verify(module)
    assert module.outputs == ["logits", "same"]
    assert "identity" not in {op.kind for op in module.ops() if op.outputs == ["logits"]}
    x = f32(1, 2, 4, 4)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "m.onnx"), "--engine", "reference", "--inputs",
                 str(tmp_path / "x.npy"), "--outputs", str(tmp_path / "y.npz"), "-q"]) == 0
    got = np.load(tmp_path / "y.npz")
    assert sorted(got.files) == ["logits", "same"]
    np.testing.assert_array_equal(got["same"], x)
    np.testing.assert_allclose(got["logits"], exact_outputs(model, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)


def test_quantized_float_weights_become_integer_constants(tmp_path: Path) -> None:
    """QDQ as quantization toolkits export it (QuantizeLinear of the float weights, and of
    a weight shared through an Identity with one onnxruntime quantized): each quantize
    of a constant is the constant of its codes, so the conv is an integer layer; the
    program is bit-exact and within a quantum of the exact oracle."""
    from models import save_graph

    import cimc

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) / 3
    scale = float(np.abs(w).max() / 127)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(scale, np.float32), "sw"),
             numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"]),
             helper.make_node("QuantizeLinear", ["w", "sw", "z"], ["wq"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "z"], ["wd"]),
             helper.make_node("Conv", ["x", "wd"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["output"])]
    path = save_graph(tmp_path / "m.onnx", nodes, [1, 2, 6, 6], [1, 4, 6, 6], inits)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    program = cimc.compile(path, "isaac")
    assert [op.kind for op in program.module.ops()].count("matvec") == 1
    reference = cimc.run_reference(program.integer, {"input": x})["output"]
    np.testing.assert_array_equal(program.simulate(x).outputs["output"], reference)
    oracle = np.concatenate([exact_outputs(path, {"input": x[k:k + 1]})[0] for k in range(3)])
    assert np.abs(reference - oracle).max() <= 0.05 * 1.0001
