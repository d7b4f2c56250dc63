"""Sequences of tokens on the chip (issue 13): a [1, T, D] activation is an image of one
row of T pixels with D channels, so a Linear over the tokens (canonicalize's reshape to
[T, D], gemm, reshape back) is a 1x1 convolution on the crossbars and a mean over the
tokens an average pool (passes/lower/sequence.py). A token-wise feed-forward network,
mean-pooled and classified, exported by torch (legacy 13, dynamo 18) and quantized by
quantize_static, simulates bit for bit equal to the reference on `isaac` and `edge`, the
reference within one quantum of the exact oracle."""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from checks import assert_simulation_equals_reference, assert_within_a_quantum_of_the_oracle
from models import CALIBRATION_BATCHES, CALIBRATION_SEED, quantize_qdq, workdir
from onnx import TensorProto, helper

import cimc
from cimc.diagnostics import CimcError

TOKENS, WIDTH = 16, 32
EXPORTERS = {"legacy": 13, "dynamo": 18}


@functools.cache
def _model(exporter: str, activations: str) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)

    class TokenClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ff = nn.Sequential(nn.Linear(WIDTH, 64), nn.ReLU(), nn.Linear(64, WIDTH))
            self.head = nn.Linear(WIDTH, 10)

        def forward(self, x):
            return self.head(self.ff(x).mean(1))

    path = workdir() / f"seq-tokens-{exporter}.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TokenClassifier().eval(), (torch.zeros(1, TOKENS, WIDTH),), str(path),
                          input_names=["input"], output_names=["logits"],
                          opset_version=EXPORTERS[exporter], dynamo=exporter == "dynamo")
    rng = np.random.default_rng(CALIBRATION_SEED)
    batches = rng.standard_normal((CALIBRATION_BATCHES, TOKENS, WIDTH)).astype(np.float32)
    return quantize_qdq(path, batches, activations)


@pytest.mark.parametrize("exporter", sorted(EXPORTERS))
@pytest.mark.parametrize("activations", ["int8", "uint8"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_token_classifier_simulates_bit_exact_within_a_quantum(
        exporter: str, activations: str, target: str, tmp_path: Path) -> None:
    model = _model(exporter, activations)
    x = np.random.default_rng(11).standard_normal((4, TOKENS, WIDTH)).astype(np.float32)
    program = cimc.compile(model, target)
    kinds = [op.kind for op in program.module.ops()]
    assert kinds.count("matvec") == 3 and "pool" in kinds
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    assert_within_a_quantum_of_the_oracle(program, model, x)


def test_a_mean_over_the_features_is_refused_naming_the_op(tmp_path: Path) -> None:
    """The chip reduces a row's pixels (the tokens), not a pixel's channels; bias-free
    MatMuls (the quantizer's DequantizeLinear before canonicalize's reshape) fold."""
    rng = np.random.default_rng(0)
    w = [onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), f"w{k}")
         for k, s in enumerate([(WIDTH, 8), (1, 4)])]
    nodes = [helper.make_node("MatMul", ["input", "w0"], ["h"]),
             helper.make_node("ReduceMean", ["h"], ["m"], name="features", axes=[2],
                              keepdims=1),
             helper.make_node("MatMul", ["m", "w1"], ["output"])]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                   [1, TOKENS, WIDTH])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, TOKENS, 4])], w)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "m.onnx")
    x = rng.standard_normal((4, TOKENS, WIDTH)).astype(np.float32)
    module = cimc.api.prepare(tmp_path / "m.onnx", calibrate={"input": x})
    assert [op.kind for op in module.ops()].count("gemm") == 2
    with pytest.raises(CimcError, match=r"op 'features' \(reduce_mean\): the chip reduces "
                                        r"the tokens"):
        cimc.compile(tmp_path / "m.onnx", "isaac", calibrate={"input": x})


def test_a_model_the_host_runs_whole_compiles(tmp_path: Path) -> None:
    """Nothing after the input's quantize is integer (a lone QDQ Softmax): no layer for the
    chip, and partition's phase model took its first layer (IndexError); the host runs it."""
    consts = [onnx.numpy_helper.from_array(np.array(0.05, np.float32), "s"),
              helper.make_tensor("z", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Softmax", ["d"], ["output"], axis=1)]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "m.onnx")
    program = cimc.compile(tmp_path / "m.onnx", "isaac")
    x = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    simulated = program.simulate(x).outputs["output"]
    np.testing.assert_array_equal(simulated,
                                  cimc.run_reference(program.integer, {"input": x})["output"])


@pytest.mark.parametrize(("kind", "shape", "axes", "out"), [
    ("ReduceSum", [1, 12, 16], [1], [1, 1, 16]),
    ("ReduceSum", [1, 6, 5, 4], [2, 3], [1, 6, 1, 1]),
    ("ReduceSum", [1, 6, 5, 4], [-1, -2], [1, 6, 1, 1]),
    ("ReduceMean", [1, 12, 16], [1], [1, 1, 16]),
])
def test_a_quantized_sum_or_mean_over_tokens_or_pixels_runs_bit_exact(
        kind: str, shape: list[int], axes: list[int], out: list[int], tmp_path: Path) -> None:
    """ReduceSum (opset 13: axes an input) between QDQ pairs over the tokens of [1, T, D] or
    H and W of an image: an average pool whose multiplier does not divide by the count;
    ReduceMean alike divides."""
    from models import qdq_around

    axes_init = onnx.numpy_helper.from_array(np.array(axes, np.int64), "axes")
    node = helper.make_node(kind, ["xd", "axes"], ["t"], keepdims=1)
    count = int(np.prod([shape[a] for a in axes]))
    scale = 0.05 * (count if kind == "ReduceSum" else 1) / 4
    model = qdq_around([node], shape, out, [axes_init], (TensorProto.INT8, 0.05, 3),
                       (TensorProto.INT8, scale, -2), 18)
    onnx.save(model, tmp_path / "m.onnx")
    program = cimc.compile(tmp_path / "m.onnx", "isaac")
    assert "pool" in [op.kind for op in program.module.ops()]
    program.save(tmp_path / "prog.s")
    x = np.random.default_rng(1).standard_normal((3, *shape[1:])).astype(np.float32)
    assert_simulation_equals_reference(program, tmp_path / "prog.s", x)
    assert_within_a_quantum_of_the_oracle(program, tmp_path / "m.onnx", x, "output")
