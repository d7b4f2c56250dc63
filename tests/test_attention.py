"""Attention's matrix products of two activations on the vector unit (issue 13): a
quantized matmul of two token matrices is the chip's `dot`, `Σ_k (a - za)(b - zb)`
exactly in int32, requantized with `m = sa · sb / sy` (passes/lower/attention.py):
Q·Kᵀ reads K through the exporters' Transpose, attn·V transposes V's centered values in
local memory; the scores' Softmax is the chip's `pixel_softmax` (tests/test_softmax.py).
One-head attention blocks (softmax attention, and ReLU attention) exported by torch
(legacy 13, dynamo 18) and quantized by quantize_static simulate bit for bit equal to
the reference on `isaac` and `edge`, the reference within one quantum of the exact
oracle; so do one-layer encoders without LayerNorm, post-norm and pre-norm (torch's
nn.LayerNorm, legacy 17 / dynamo 18: the chip's `pixel_layernorm`, tests/test_layer_norm.py);
the timing model follows the simulator; onnx's MatMul node
cases run on the reference. Several heads (torch's nn.MultiheadAttention and
nn.TransformerEncoderLayer, both exporters) are one dot per head (passes/lower/heads.py)."""

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

TOKENS, WIDTH = 16, 32
EXPORTERS = {"legacy": 13, "dynamo": 18}
SLOW = pytest.mark.slow


@functools.cache
def _model(exporter: str, activations: str, scores: str = "softmax") -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
            self.head = nn.Linear(WIDTH, 10)

        def forward(self, x):
            logits = self.q(x) @ self.k(x).transpose(1, 2) * WIDTH ** -0.5
            weights = torch.softmax(logits, -1) if scores == "softmax" else torch.relu(logits)
            return self.head((weights @ self.v(x)).mean(1))

    path = workdir() / f"attention-{scores}-{exporter}.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Attention().eval(), (torch.zeros(1, TOKENS, WIDTH),), str(path),
                          input_names=["input"], output_names=["logits"],
                          opset_version=EXPORTERS[exporter], dynamo=exporter == "dynamo")
    rng = np.random.default_rng(CALIBRATION_SEED)
    batches = rng.standard_normal((CALIBRATION_BATCHES, TOKENS, WIDTH)).astype(np.float32)
    return quantize_qdq(path, batches, activations)


@pytest.mark.parametrize("scores", ["softmax", "relu"])
@pytest.mark.parametrize("exporter", sorted(EXPORTERS))
@pytest.mark.parametrize("activations", ["int8", "uint8"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_attention_block_simulates_bit_exact_within_a_quantum(
        scores: str, exporter: str, activations: str, target: str, tmp_path: Path) -> None:
    model = _model(exporter, activations, scores)
    x = np.random.default_rng(11).standard_normal((4, TOKENS, WIDTH)).astype(np.float32)
    program = cimc.compile(model, target)
    dots = [op for op in program.module.ops() if op.kind == "dot"]
    assert sorted(op.attrs["rows"] for op in dots) == [0, 1]  # attn·V, Q·Kᵀ
    kinds = [op.kind for op in program.module.ops()]
    assert "transpose" not in kinds
    assert kinds.count("pixel_softmax") == (scores == "softmax")
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    assert_within_a_quantum_of_the_oracle(program, model, x)


@pytest.mark.parametrize("pipeline", ["latency", "throughput"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_timing_model_within_five_percent_of_the_simulator(pipeline: str,
                                                          activations: str) -> None:
    program = cimc.compile(_model("legacy", activations), "isaac", pipeline=pipeline)
    modelled, simulated = program.report, program.simulated_report
    for key in ("cycles", "throughput", "energy_nj"):
        assert abs(modelled[key] / simulated[key] - 1) < 0.05, (key, modelled[key],
                                                                 simulated[key])


@pytest.mark.parametrize("pipeline", ["latency", pytest.param("throughput", marks=SLOW)])
def test_timing_model_of_an_encoder_with_layer_norm_follows_the_simulator(pipeline: str) -> None:
    program = cimc.compile(_encoder("legacy", "int8", "post"), "isaac", pipeline=pipeline)
    modelled, simulated = program.report, program.simulated_report
    for key in ("cycles", "throughput", "energy_nj"):
        assert abs(modelled[key] / simulated[key] - 1) < 0.05, (key, modelled[key],
                                                                 simulated[key])


def test_heads_of_a_batched_matmul_run_one_at_a_time(tmp_path: Path) -> None:
    """[1,2,T,8] x its transpose: one dot per head, joined (passes/lower/heads.py)."""
    nodes = [helper.make_node("Transpose", ["input"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["input", "t"], ["output"], name="scores")]
    graph = helper.make_graph(
        nodes, "heads", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                       [1, 2, TOKENS, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, TOKENS, TOKENS])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((4, 2, TOKENS, 8)).astype(np.float32)
    program = cimc.compile(tmp_path / "m.onnx", "isaac", calibrate={"input": x})
    assert [op.kind for op in program.module.ops()].count("dot") == 2
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


@functools.cache
def _torch_encoder(exporter: str, heads: int, layer: str, batch: int = 1,
                   pre_process: bool = True) -> Path:
    """A keyword-spotting encoder as users write it: token embedding, torch's own
    attention with `heads` heads (`layer` "encoder": nn.TransformerEncoderLayer, post-norm,
    ReLU feed-forward; "attention": nn.MultiheadAttention and a residual add), mean over
    the tokens, classifier. Both exporters write the heads as [1, heads, T, d] or
    [heads, T, d] matmuls; the legacy one computes its reshapes' shapes, on which
    onnxruntime's symbolic shape inference fails, so its pre-processing skips that.
    Exported with a `batch` of sequences baked into its shapes; quantized without
    onnxruntime's pre-processing unless `pre_process`."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(20, WIDTH)
            self.layer = (nn.TransformerEncoderLayer(WIDTH, heads, 64, dropout=0.0,
                                                     batch_first=True)
                          if layer == "encoder" else
                          nn.MultiheadAttention(WIDTH, heads, batch_first=True))
            self.head = nn.Linear(WIDTH, 10)

        def forward(self, x):
            x = self.embed(x)
            if layer == "encoder":
                x = self.layer(x)
            else:
                x = x + self.layer(x, x, x, need_weights=False)[0]
            return self.head(x.mean(1))

    path = workdir() / f"torch-{layer}-{heads}-{exporter}-{batch}-{int(pre_process)}.onnx"
    fast_path = torch.backends.mha.get_fastpath_enabled()
    # The fused kernel of inference mode has no ONNX export (legacy): the layer's ops do.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), torch.no_grad(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Encoder().eval(), (torch.zeros(batch, TOKENS, 20),), str(path),
                              input_names=["input"], output_names=["logits"],
                              opset_version={"legacy": 17, "dynamo": 18}[exporter],
                              dynamo=exporter == "dynamo")
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    rng = np.random.default_rng(CALIBRATION_SEED)
    batches = rng.standard_normal((CALIBRATION_BATCHES, TOKENS, 20)).astype(np.float32)
    return quantize_qdq(path, batches, "int8", batch, symbolic_shapes=exporter == "dynamo",
                        pre_process=pre_process)


FAST_HEADS = [("dynamo", 2, "encoder", "isaac")]
HEAD_CASES = [*FAST_HEADS,
              *(pytest.param(*case, marks=SLOW) for case in
                [("legacy", 2, "encoder", "isaac"), ("dynamo", 1, "encoder", "edge"),
                 ("dynamo", 4, "encoder", "edge"), ("legacy", 4, "attention", "edge"),
                 ("dynamo", 2, "attention", "isaac")])]


@pytest.mark.parametrize(("exporter", "heads", "layer", "target"), HEAD_CASES)
def test_torch_attention_with_heads_simulates_bit_exact_within_a_quantum(
        exporter: str, heads: int, layer: str, target: str, tmp_path: Path) -> None:
    """Each head's Q·Kᵀ and attn·V is a dot, its scores' softmax one pixel_softmax over
    the heads' rows; the timing model follows the simulator."""
    model = _torch_encoder(exporter, heads, layer)
    x = np.random.default_rng(11).standard_normal((4, TOKENS, 20)).astype(np.float32)
    program = cimc.compile(model, target)
    kinds = [op.kind for op in program.module.ops()]
    assert kinds.count("dot") == 2 * heads and kinds.count("pixel_softmax") == 1
    assert kinds.count("pixel_layernorm") == (2 if layer == "encoder" else 0)
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    assert_within_a_quantum_of_the_oracle(program, model, x)
    modelled, simulated = program.report, program.simulated_report
    for key in ("cycles", "throughput"):
        assert abs(modelled[key] / simulated[key] - 1) < 0.05, (key, modelled[key],
                                                                 simulated[key])


@functools.cache
def _encoder(exporter: str, activations: str, norm: str = "none") -> Path:
    """A one-layer transformer encoder: token embedding, softmax attention with an output
    projection, residual adds, a GELU feed-forward network, mean over the tokens,
    classifier; `norm` "post" or "pre" adds torch's nn.LayerNorm after each residual add
    (nn.TransformerEncoderLayer's default) or before each block (norm_first), "none" none.
    LayerNormalization is an operator from opset 17: the legacy exporter writes it there
    (at opset 13 it spells it out as ReduceMean, Sub, Pow, Sqrt, Div, ...)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(20, WIDTH)
            self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
            self.ff = nn.Sequential(nn.Linear(WIDTH, 64), nn.GELU(), nn.Linear(64, WIDTH))
            self.head = nn.Linear(WIDTH, 10)
            self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            with torch.no_grad():  # trained-looking gammas and betas, not ones and zeros
                for layer in (self.norm1, self.norm2):
                    layer.weight.uniform_(0.5, 1.5)
                    layer.bias.normal_(0, 0.2)

        def attend(self, x):
            weights = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) * WIDTH ** -0.5, -1)
            return self.o(weights @ self.v(x))

        def forward(self, x):
            x = self.embed(x)
            if norm == "pre":
                x = x + self.attend(self.norm1(x))
                x = x + self.ff(self.norm2(x))
            elif norm == "post":
                x = self.norm1(x + self.attend(x))
                x = self.norm2(x + self.ff(x))
            else:
                x = x + self.attend(x)
                x = x + self.ff(x)
            return self.head(x.mean(1))

    path = workdir() / f"encoder-{norm}-{exporter}.onnx"
    opset = {"legacy": 17, "dynamo": 18}[exporter] if norm != "none" else EXPORTERS[exporter]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder().eval(), (torch.zeros(1, TOKENS, 20),), str(path),
                          input_names=["input"], output_names=["logits"],
                          opset_version=opset, dynamo=exporter == "dynamo")
    rng = np.random.default_rng(CALIBRATION_SEED)
    batches = rng.standard_normal((CALIBRATION_BATCHES, TOKENS, 20)).astype(np.float32)
    return quantize_qdq(path, batches, activations)


FAST_ENCODERS = [("none", "legacy", "int8", "isaac"), ("post", "legacy", "int8", "isaac")]
ENCODER_CASES = [*FAST_ENCODERS,
                 *(pytest.param(n, e, a, t, marks=SLOW) for n in ("none", "post", "pre")
                   for e in sorted(EXPORTERS) for a in ("int8", "uint8")
                   for t in ("isaac", "edge") if (n, e, a, t) not in FAST_ENCODERS)]


@pytest.mark.parametrize(("norm", "exporter", "activations", "target"), ENCODER_CASES)
def test_encoder_layer_simulates_bit_exact_within_a_quantum(
        norm: str, exporter: str, activations: str, target: str, tmp_path: Path) -> None:
    """quantize_static leaves LayerNormalization float between DequantizeLinear (gamma an
    int8, beta an int32 constant) and QuantizeLinear: fold-qdq makes it integer, the
    chip's `pixel_layernorm`."""
    model = _encoder(exporter, activations, norm)
    x = np.random.default_rng(11).standard_normal((4, TOKENS, 20)).astype(np.float32)
    program = cimc.compile(model, target)
    kinds = [op.kind for op in program.module.ops()]
    assert kinds.count("dot") == 2 and kinds.count("pixel_softmax") == 1
    assert kinds.count("eltwise") == 2  # the residual adds
    assert kinds.count("pixel_layernorm") == (0 if norm == "none" else 2)
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    assert_within_a_quantum_of_the_oracle(program, model, x)


@pytest.mark.parametrize(("exporter", "heads", "layer", "target"), [
    ("dynamo", 2, "encoder", "isaac"),
    pytest.param("legacy", 2, "encoder", "edge", marks=SLOW),
    pytest.param("legacy", 1, "attention", "isaac", marks=SLOW),
    pytest.param("dynamo", 4, "attention", "edge", marks=SLOW)])
def test_attention_with_a_batch_baked_into_the_export_runs_sample_by_sample(
        exporter: str, heads: int, layer: str, target: str, tmp_path: Path) -> None:
    """Exported with 4 sequences: onnxruntime's pre-processing makes each Linear over the
    tokens a Gemm of [4·T, D] rows, the legacy exporter's attention runs time-major on
    [T·4, D] rows and [T, 4·heads, d] heads; `unbatch` follows the samples merged into
    those axes, so the program computes one sequence and a run takes them stacked."""
    model = _torch_encoder(exporter, heads, layer, batch=4)
    x = np.random.default_rng(11).standard_normal((8, TOKENS, 20)).astype(np.float32)
    program = cimc.compile(model, target)
    assert program.module.values[program.module.inputs[0]].shape == (1, TOKENS, 20)
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    assert_within_a_quantum_of_the_oracle(program, model, x, batch=4)


@pytest.mark.parametrize(("exporter", "target"), [
    ("dynamo", "isaac"), pytest.param("legacy", "edge", marks=SLOW)])
def test_an_encoder_quantized_without_pre_processing_runs_on_the_chip(
        exporter: str, target: str, tmp_path: Path) -> None:
    """quantize_static given the export as it is: each Linear over the tokens stays a
    MatMul and an Add of its bias, quantized apart (the add a `scale` with per-channel
    offsets on the chip); the legacy exporter's gammas shared through an Identity get a
    QuantizeLinear of their own (a constant of codes after canonicalize)."""
    model = _torch_encoder(exporter, 2, "encoder", pre_process=False)
    x = np.random.default_rng(11).standard_normal((4, TOKENS, 20)).astype(np.float32)
    program = cimc.compile(model, target)
    scales = [op for op in program.module.ops() if op.kind == "scale"]
    assert scales and all(op.attrs.get("offsets") for op in scales)
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    assert_within_a_quantum_of_the_oracle(program, model, x)
    modelled, simulated = program.report, program.simulated_report
    assert abs(modelled["cycles"] / simulated["cycles"] - 1) < 0.05
