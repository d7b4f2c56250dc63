"""onnx's own operator test cases (`onnx.backend.test.case.node`) for the ops of the
models people bring to a CIM compiler (issue 13): every case of those ops (one node, or
an expanded function of them),
with its weights, scales, shapes and recurrent parameters made initializers, runs
through `cimc run --engine reference` and matches the case's expected output (float
within the case's tolerance; integers exactly). The cases cimc refuses are listed
below with the reason its message gives; every other case must pass, and the refused
stay under a tenth."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cimc.cli import main

OPS = frozenset("""
Conv ConvTranspose Gemm MatMul Add Sub Mul Div Pow Relu Clip Sigmoid Tanh HardSigmoid HardSwish
LeakyRelu Elu Selu Softplus Gelu Erf Softmax LogSoftmax MaxPool AveragePool GlobalAveragePool
GlobalMaxPool BatchNormalization LRN Concat Reshape Flatten Transpose Pad Slice Split Squeeze
Unsqueeze Resize Upsample LSTM GRU RNN LayerNormalization QuantizeLinear DequantizeLinear
ReduceMean ReduceSum
""".split())
# The operand positions of each op that are weights, scales, shapes or recurrent
# parameters: a model holds them as initializers, where the cases feed them as inputs.
PARAMETERS = {
    "Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": {1, 2}, "Clip": {1, 2},
    "Pad": {1, 2, 3}, "Slice": {1, 2, 3, 4}, "Split": {1}, "Squeeze": {1}, "Unsqueeze": {1},
    "Resize": {1, 2, 3}, "Upsample": {1}, "Reshape": {1}, "BatchNormalization": {1, 2, 3, 4},
    "LSTM": {1, 2, 3, 4, 5, 6, 7}, "GRU": {1, 2, 3, 4, 5}, "RNN": {1, 2, 3, 4, 5},
    "LayerNormalization": {1, 2}, "ReduceMean": {1}, "ReduceSum": {1},
    "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2},
}
# Cases cimc refuses, by name, with the text its one error message holds.
REFUSED = [
    (r"_(e4m3fn|e5m2|float4e2m1|u?int[24])(_|$)", "which cimc does not support"),
    (r"_blocked", "blocked quantization"),
    (r"_training_mode", "training-mode batch normalization"),
    (r"_with_argmax_", "imports only the main result"),
    (r"zero_size_splits|allowzero_reordered|empty_set", "an empty tensor"),
    (r"^test_convtranspose_[13]d", "only 2-D ConvTranspose"),
]


def _cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    return [case for case in collect_testcases()
            if {node.op_type for node in case.model.graph.node} <= OPS
            and all(i.type.HasField("tensor_type") for i in case.model.graph.input)]


CASES = _cases()


def _refusal(name: str) -> str | None:
    return next((says for pattern, says in REFUSED if re.search(pattern, name)), None)


def _with_initializers(case, inputs: list) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    parameters = {node.input[i] for node in graph.node for i in PARAMETERS.get(node.op_type, ())
                  if i < len(node.input) and node.input[i]}
    kept, feeds = [], {}
    for value, data in zip(list(graph.input), inputs, strict=True):
        if isinstance(data, onnx.TensorProto):
            data = numpy_helper.to_array(data)
        if value.name in parameters:
            graph.initializer.append(numpy_helper.from_array(np.asarray(data), value.name))
        else:
            kept.append(value)
            feeds[value.name] = np.asarray(data)
    del graph.input[:]
    graph.input.extend(kept)
    return model, feeds


def _run(case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str | None:
    """None when every data set of `case` gives its expected outputs; else the error."""
    for k, (inputs, outputs) in enumerate(case.data_sets):
        model, feeds = _with_initializers(case, inputs)
        onnx.save(model, tmp_path / "m.onnx")
        np.savez(tmp_path / "x.npz", **feeds)
        out = tmp_path / f"y{k}.npz"
        status = main(["run", str(tmp_path / "m.onnx"), "--engine", "reference", "--inputs",
                       str(tmp_path / "x.npz"), "--outputs", str(out), "-q"])
        err = capsys.readouterr().err
        if status != 0:
            assert status == 1 and "Traceback" not in err, err
            assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
            return err
        got = np.load(out)
        for value, expected in zip(model.graph.output, outputs, strict=True):
            expected = np.asarray(expected)
            result = got[value.name]
            assert result.shape == expected.shape, value.name
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(result, expected, rtol=case.rtol, atol=case.atol)
            else:
                np.testing.assert_array_equal(result, expected)
    return None


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_onnx_node_case_runs_on_the_reference(case, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    error = _run(case, tmp_path, capsys)
    says = _refusal(case.name)
    if says is None:
        assert error is None, f"{case.name} is refused: {error}"
    else:
        assert error is not None and says in error, f"{case.name}: {error}"


def test_the_refused_cases_stay_under_a_tenth() -> None:
    ops = {case.model.graph.node[0].op_type for case in CASES}
    assert ops == OPS
    refused = [case.name for case in CASES if _refusal(case.name)]
    assert len(refused) / len(CASES) < 0.1, (len(refused), len(CASES))
