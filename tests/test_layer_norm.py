"""LayerNormalization (issue 13), float: imported as `layer_norm` (Y, in float64) with
its Mean and InvStdDev outputs as reduce_mean, sub, mul, add and pow (onnx's node cases:
tests/test_node_cases.py). The chip has no integer LayerNorm
yet: a quantized model with one between integer layers is refused naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.diagnostics import CimcError


def test_a_layer_norm_between_integer_layers_is_refused_naming_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), name)
             for name, s in (("w0", (16, 16)), ("w1", (16, 8)), ("g", (16,)), ("b", (16,)))]
    nodes = [helper.make_node("MatMul", ["input", "w0"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], name="norm"),
             helper.make_node("MatMul", ["n", "w1"], ["output"])]
    graph = helper.make_graph(
        nodes, "ln", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    x = rng.standard_normal((4, 8, 16)).astype(np.float32)
    with pytest.raises(CimcError, match=r"op 'norm' \(layer_norm\) computes in float between "
                                        r"integer layers.*no integer form of it yet"):
        cimc.compile(tmp_path / "m.onnx", "isaac", calibrate={"input": x})
