"""Recurrent layers (issue 13): ONNX LSTM, GRU and RNN. onnx's node test cases in float
through `cimc run --engine reference` (their weights, biases, sequence lengths, initial
states and peepholes made initializers); torch's nn.LSTM and nn.GRU classifiers
(batch_first, one and two layers, forward and bidirectional) exported by the legacy
exporter at opset 13 and by dynamo at opset 18, run by the reference against
onnxruntime; and the messages for what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import recurrent_models
from onnx import TensorProto, helper, numpy_helper

from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.frontend.importer import import_onnx
from cimc.reference import run_module
from cimc.reference.oracle import ExactOracle

RECURRENT_OPS = {"LSTM", "GRU", "RNN"}


def _node_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    return [case for case in collect_testcases()
            if {n.op_type for n in case.model.graph.node} <= RECURRENT_OPS]


NODE_CASES = _node_cases()


def _with_initializers(case) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """The case's model with every input but X an initializer of its first data set's
    value (the weights of a real model are), and the X of each data set."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    inputs = case.data_sets[0][0]
    kept = []
    for info, value in zip(list(graph.input), inputs, strict=True):
        if info.name == "X":
            kept.append(info)
        else:
            graph.initializer.append(numpy_helper.from_array(np.asarray(value), info.name))
    del graph.input[:]
    graph.input.extend(kept)
    for other in case.data_sets[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(other[0][1:], inputs[1:], strict=True))
    return model, [data[0][0] for data in case.data_sets]


def test_every_recurrent_op_has_node_cases() -> None:
    assert {n.op_type for case in NODE_CASES for n in case.model.graph.node} == RECURRENT_OPS
    assert len(NODE_CASES) >= 18


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.name for c in NODE_CASES])
def test_onnx_node_cases_run_on_the_reference(case, tmp_path: Path) -> None:
    """Float semantics: each case's expected outputs, within the case's tolerance."""
    model, xs = _with_initializers(case)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    for k, (x, (_, outputs)) in enumerate(zip(xs, case.data_sets, strict=True)):
        np.savez(tmp_path / "x.npz", X=x)
        out = tmp_path / f"y{k}.npz"
        assert main(["run", str(path), "--engine", "reference", "--inputs",
                     str(tmp_path / "x.npz"), "--outputs", str(out), "-q"]) == 0
        got = np.load(out)
        for o, expected in zip(model.graph.output, outputs, strict=True):
            np.testing.assert_allclose(got[o.name], expected, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize(("name", "exporter"), recurrent_models.CASES)
def test_torch_exports_run_on_the_reference_as_onnxruntime_runs_them(
        name: str, exporter: str) -> None:
    """The float model, imported as it is, against onnxruntime (float32 throughout)."""
    path = recurrent_models.float_model(name, exporter)
    module = import_onnx(str(path))
    kinds = [op.kind for op in module.ops()]
    layer, layers, _ = recurrent_models.LAYERS[name]
    assert kinds.count(layer.lower()) == layers
    x = recurrent_models.sample_inputs(3, seed=5)
    got = run_module(module, {"input": x})["logits"]
    expected = ExactOracle(path).run_samples(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _lstm_model(tmp_path: Path, **attrs) -> Path:
    """X[5,1,3] -> LSTM(hidden 2) -> Y_h, with seeded weights and the given attributes
    (and a sequence_lens initializer when `lengths` is given)."""
    rng = np.random.default_rng(0)
    lengths = attrs.pop("lengths", None)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 8, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 8, 2)).astype(np.float32), "R")]
    inputs = ["X", "W", "R"]
    if lengths is not None:
        inits.append(numpy_helper.from_array(np.array(lengths, np.int32), "L"))
        inputs += ["", "L"]
    node = helper.make_node("LSTM", inputs, ["", "Y_h"], name="lstm", hidden_size=2, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 1, 3])],
        [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, 2])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    return path


@pytest.mark.parametrize(("attrs", "message"), [
    ({"activations": ["Relu", "Tanh", "Tanh"]}, "activations ['Relu', 'Tanh', 'Tanh'] are not "
     "supported; only ONNX's defaults (Sigmoid, Tanh, Tanh per direction)"),
    ({"input_forget": 1}, "input_forget=1"),
    ({"lengths": [3]}, "sequence_lens [3] differ from the time axis (5)"),
])
def test_unsupported_recurrent_forms_name_the_node(attrs: dict, message: str,
                                                    tmp_path: Path) -> None:
    with pytest.raises(CimcError, match=r"node 'lstm' \(LSTM\): ") as info:
        import_onnx(str(_lstm_model(tmp_path, **attrs)))
    assert message in str(info.value)


def test_whole_sequence_lengths_and_clip_run(tmp_path: Path) -> None:
    """sequence_lens equal to the time axis is dropped; clip bounds every pre-activation
    (onnxruntime as the oracle: onnx's reference evaluator ignores clip)."""
    for attrs in ({"lengths": [5]}, {"clip": 0.5}):
        path = _lstm_model(tmp_path, **attrs)
        x = np.random.default_rng(1).standard_normal((5, 1, 3)).astype(np.float32) * 3
        got = run_module(import_onnx(str(path)), {"X": x})["Y_h"]
        expected = ExactOracle(path).run({"X": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
