"""Average pools whose border windows average fewer positions (count_include_pad=0 with
pads, as Inception and ShuffleNet write them; ceil_mode windows past the pads): each
divisor has its own multiplier on the chip. Quantized by quantize_static, compiled for
`isaac` and `edge`: the simulator equals the reference bit for bit, and the reference
is within one quantum of the exact oracle."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.cli import main
from cimc.reference.oracle import exact_outputs

POOLS = {
    "exclude_pad": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0},
    "exclude_pad_strided": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "ceil_past_pads": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1],
                       "ceil_mode": 1, "count_include_pad": 1},
    "one_sided": {"kernel_shape": [2, 3], "pads": [1, 0, 0, 2]},
}


def _model(path: Path, attrs: dict) -> Path:
    rng = np.random.default_rng(5)
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32) * 0.3
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("AveragePool", ["r"], ["p"], **attrs),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)], "pool",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, (1, 3, 9, 9))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = onnx.shape_inference.infer_shapes(model)
    pooled = next(v for v in model.graph.value_info if v.name == "f")
    k = pooled.type.tensor_type.shape.dim[1].dim_value
    model.graph.initializer.append(numpy_helper.from_array(
        rng.normal(size=(4, k)).astype(np.float32) * 0.2, "fc"))
    onnx.save(model, path)
    batches = rng.normal(size=(8, 3, 9, 9)).astype(np.float32)
    return models.quantize_qdq(path, batches, "int8")


@pytest.mark.parametrize("target", ["isaac", "edge"])
@pytest.mark.parametrize("pool", sorted(POOLS))
def test_border_windows_average_their_own_positions(pool: str, target: str,
                                                     tmp_path: Path) -> None:
    quantized = _model(tmp_path / "m.onnx", POOLS[pool])
    x = np.random.default_rng(9).normal(size=(3, 3, 9, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for engine in ("reference", "sim"):
        out = tmp_path / f"{engine}.npy"
        assert main(["run", str(quantized), "--engine", engine, "--target", target,
                     "--inputs", str(tmp_path / "x.npy"), "--outputs", str(out), "-q"]) == 0
        outputs[engine] = np.load(out)
    np.testing.assert_array_equal(outputs["sim"], outputs["reference"])
    expected = np.concatenate([exact_outputs(quantized, {"input": x[i:i + 1]})[0]
                               for i in range(len(x))])
    scale = float(numpy_helper.to_array(next(
        i for i in onnx.load(quantized).graph.initializer if i.name == "y_scale")))
    assert np.abs(outputs["reference"] - expected).max() <= scale * (1 + 1e-3)
