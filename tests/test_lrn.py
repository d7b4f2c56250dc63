"""Local response normalization in integers (issue 13): fold-qdq makes a float LRN
between quantized layers (onnxruntime leaves it float) a lookup of the squares, a 1x1
conv summing the channel window, a lookup of the normalizing factor and a product
(passes/fold_qdq/lrn.py; onnx's node cases in float: tests/test_node_cases.py). The
integer form is within one quantum of the exact oracle with AlexNet's parameters, the
programs simulate bit for bit equal to the reference, an LRN followed by a max pool
(AlexNet's norm1 -> pool1) folds too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from checks import assert_simulation_equals_reference
from models import qdq_around
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.reference.oracle import ExactOracle

ALEXNET = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}


def _qdq_lrn(path: Path, dtype: int, sx: float, zx: int, sy: float, zy: int,
             attrs: dict) -> Path:
    """input -> Q -> DQ -> LRN -> Q -> DQ -> output, as quantize_static leaves an LRN."""
    shape = [1, 8, 4, 8]
    node = helper.make_node("LRN", ["xd"], ["t"], name="lrn", **attrs)
    onnx.save(qdq_around([node], shape, shape, [], (dtype, sx, zx), (dtype, sy, zy), 13, "lrn"),
              path)
    return path


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize(("attrs", "quanta"), [
    (ALEXNET, 1), ({"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 1.0}, 3),
    ({"size": 7, "alpha": 1.0, "beta": 1.0, "bias": 0.5}, 5)],
    ids=["alexnet", "strong", "stronger"])
def test_integer_lrn_against_the_oracle_and_simulated(dtype: str, attrs: dict, quanta: int,
                                                       tmp_path: Path) -> None:
    """Every input code; the result's scale fits the float LRN's range. The error is the
    8-bit rounding of the normalizing factor: within one quantum with AlexNet's
    parameters (those of every LRN in the onnx package's zoo), more where the factor
    varies over orders of magnitude (measured: up to 3 and 5 quanta here)."""
    onnx_type = TensorProto.INT8 if dtype == "int8" else TensorProto.UINT8
    low = -128 if dtype == "int8" else 0
    sx = 0.05
    codes = np.random.default_rng(0).permutation(np.tile(np.arange(256), 4))
    x = ((codes - 128) * sx).astype(np.float32).reshape(4, 8, 4, 8)
    path = _qdq_lrn(tmp_path / "m.onnx", onnx_type, sx, low + 128, 1.0, low + 128, attrs)
    y = ExactOracle(path).run_samples(x)
    sy = float(np.abs(y).max() / 127) if dtype == "int8" else float(np.ptp(y) / 255)
    zy = 0 if dtype == "int8" else int(np.clip(np.rint(-y.min() / sy), 0, 255))
    path = _qdq_lrn(tmp_path / "m.onnx", onnx_type, sx, low + 128, sy, zy, attrs)
    module = cimc.api.prepare(path)
    assert [op.kind for op in module.ops()] == ["quantize", "lut", "conv", "lut", "mul",
                                                "dequantize"]
    got = cimc.run_reference(module, {"input": x})["output"]
    assert np.abs(got - ExactOracle(path).run_samples(x)).max() <= quanta * sy * 1.0001
    program = cimc.compile(path, "isaac")
    assert {op.kind for op in program.module.ops()} == {"quantize", "rescale", "matvec",
                                                        "product", "dequantize"}
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


@pytest.mark.parametrize("target", ["tiny", "isaac", "edge"])
def test_lrn_between_convs_then_a_max_pool_compiles_and_simulates(target: str,
                                                                   tmp_path: Path) -> None:
    """AlexNet's conv -> relu -> LRN -> max pool -> conv in small, quantized by cimc (the
    quantizer leaves the LRN and the pool after it float): bit-exact on the chip, the
    logits within one quantum of the exact oracle."""
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) / 3, f"w{k}")
         for k, s in enumerate([(8, 3, 3, 3), (4, 8, 3, 3)])]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("LRN", ["r"], ["n"], name="norm", **ALEXNET),
             helper.make_node("MaxPool", ["n"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w1"], ["output"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "norm", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 4, 4])], w)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = (rng.standard_normal((4, 3, 8, 8)) * 8).astype(np.float32)
    program = cimc.compile(path, target, calibrate={"input": x})
    kinds = [op.kind for op in program.integer.ops()]
    assert "lrn" not in kinds and kinds.count("lut") == 2 and "mul" in kinds
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


@pytest.mark.parametrize("target", ["tiny", "isaac"])
def test_quantize_static_lrn_model_is_bit_exact_within_a_quantum(target: str,
                                                                 tmp_path: Path) -> None:
    """tests/backend_models.py's AlexNet in small (conv, relu, LRN, conv, relu, gemm),
    quantized by quantize_static, which leaves the LRN float."""
    import backend_models

    model = backend_models.quantized_model("lrn_tiny")
    x = backend_models.sample_inputs("lrn_tiny", 6, seed=3)
    program = cimc.compile(model, target)
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)
    reference = cimc.run_reference(program.integer, {"input": x})["logits"]
    dequantize = next(op for op in program.integer.ops() if op.kind == "dequantize")
    quantum = float(program.integer.values[dequantize.inputs[0]].quant.scale[0])
    assert np.abs(reference - ExactOracle(model).run_samples(x)).max() <= quantum * 1.0001
