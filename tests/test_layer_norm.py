"""LayerNormalization (issue 13), float: imported as `layer_norm` (Y, in float64) with
its Mean and InvStdDev outputs as reduce_mean, sub, mul, add and pow; onnx's
LayerNormalization node cases run on the reference. The chip has no integer LayerNorm
yet: a quantized model with one between integer layers is refused naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.cli import main
from cimc.diagnostics import CimcError


def _node_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    return [case for case in collect_testcases()
            if {n.op_type for n in case.model.graph.node} == {"LayerNormalization"}]


NODE_CASES = _node_cases()


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.name for c in NODE_CASES])
def test_onnx_node_cases_run_on_the_reference(case, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(case.model, path)
    graph = case.model.graph
    assert len(NODE_CASES) >= 15
    for k, (inputs, outputs) in enumerate(case.data_sets):
        np.savez(tmp_path / "x.npz", **{i.name: x for i, x in zip(graph.input, inputs,
                                                                    strict=True)})
        out = tmp_path / f"y{k}.npz"
        assert main(["run", str(path), "--engine", "reference", "--inputs",
                     str(tmp_path / "x.npz"), "--outputs", str(out), "-q"]) == 0
        got = np.load(out)
        for o, expected in zip(graph.output, outputs, strict=True):
            np.testing.assert_allclose(got[o.name], expected, rtol=case.rtol, atol=case.atol)


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
