"""1-D signals (cimc/frontend/signal.py): a keyword-spotting network of Conv1d and 1-D
pools, exported by torch (legacy 13, dynamo 18: the latter writes its adaptive pool
as Unsqueeze -> ReduceMean -> Squeeze) and quantized by quantize_static, runs as an
image of one row: bit-exact with the reference and within one quantum of the exact
oracle on the 1-D model; an op the rewrite does not cover is named."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.diagnostics import CimcError
from cimc.host.ports import reference_codes
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image
from cimc.isa.simulator import run_float, run_program
from cimc.reference.oracle import ExactOracle


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_a_keyword_spotting_network_runs_bit_exact(exporter: str, target: str,
                                                    tmp_path: Path) -> None:
    model = models.quantized_model("kws1d", exporter)
    compiled = cimc.compile(model, target)
    compiled.save(tmp_path / "prog.s")
    name = compiled.integer.inputs[0]
    assert compiled.integer.values[name].shape == (1, 8, 1, 40)
    x = models.sample_inputs("kws1d", 3, seed=4)  # [3, 8, 40]
    inputs, expected = reference_codes(compiled.integer, {name: x})
    program = assemble_file(tmp_path / "prog.s")
    image = load_image(tmp_path / "prog.img")
    outputs, _ = run_program(program, image, compiled.target, inputs)
    for port, codes in expected.items():
        np.testing.assert_array_equal(outputs[port], codes)
    got, _ = run_float(program, image, compiled.target,
                       {program.inputs[0].name: x.transpose(0, 2, 1)[:, None]})
    want = ExactOracle(model).run_samples(x)
    output = program.outputs[0]
    assert np.abs(got[output.name] - want).max() <= output.scale * 1.001
    assert (got[output.name].argmax(1) == want.argmax(1)).all()


def test_a_1d_op_the_rewrite_does_not_cover_is_named(tmp_path: Path) -> None:
    """An op the rewrite to rows does not cover may read a signal (it gets [N, C, L] back)
    but not write one that joins the rows (a softmax over the channels added to them)."""
    weights = np.ones((4, 2, 3), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
         helper.make_node("Softmax", ["c"], ["p"], axis=1, name="attend"),
         helper.make_node("Add", ["c", "p"], ["y"])], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2, 8))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 8))],
        initializer=[numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "t.onnx")
    with pytest.raises(CimcError, match=r"node 'attend' \(Softmax\) reads a 1-D signal"):
        cimc.compile(tmp_path / "t.onnx", "isaac", calibrate=np.zeros((1, 2, 8), np.float32))


def test_cimc_run_takes_the_signals_as_they_are(tmp_path: Path) -> None:
    """[N, C, L] data for a model read as [N, C, 1, L]: sim equals the reference."""
    from cimc.cli import main

    np.save(tmp_path / "x.npy", models.sample_inputs("kws1d", 3, seed=2))
    model = models.quantized_model("kws1d", "dynamo")
    for engine in ("sim", "reference"):
        assert main(["run", str(model), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                     str(tmp_path / f"{engine}.npy"), "--engine", engine, "-q"]) == 0
    sim, reference = np.load(tmp_path / "sim.npy"), np.load(tmp_path / "reference.npy")
    assert sim.shape == (3, 5)
    np.testing.assert_array_equal(sim, reference)


def test_a_signal_output_keeps_its_rank(tmp_path: Path) -> None:
    """A model whose result is itself a signal (a denoiser: Conv1d -> Relu -> Conv1d)
    gives [N, C, L] outputs, not the rows it was computed as, on both engines."""
    from cimc.cli import main

    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[2, 2], kernel_shape=[5])], "d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2, 16))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 3, 16))],
        initializer=[numpy_helper.from_array(rng.normal(size=(4, 2, 3)).astype(np.float32), "w1"),
                     numpy_helper.from_array(rng.normal(size=(3, 4, 5)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "d.onnx")
    x = rng.normal(size=(3, 2, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for engine in ("sim", "reference"):
        assert main(["run", str(tmp_path / "d.onnx"), "--inputs", str(tmp_path / "x.npy"),
                     "--outputs", str(tmp_path / f"{engine}.npy"), "--engine", engine,
                     "--calibrate", str(tmp_path / "x.npy"), "-q"]) == 0
    sim, reference = np.load(tmp_path / "sim.npy"), np.load(tmp_path / "reference.npy")
    assert sim.shape == (3, 3, 16)
    np.testing.assert_array_equal(sim, reference)
    assert main(["run", str(tmp_path / "d.onnx"), "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "float.npy"), "--engine", "reference", "-q"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "float.npy"),
                               ExactOracle(tmp_path / "d.onnx").run_samples(x), atol=1e-5)


def _features_model(exporter: str) -> Path:
    """Time-major features [N, T, F] (as an MFCC front end gives them) transposed to
    [N, F, T], padded, a Conv1d, a slice of the time axis, a 1-D max pool, a classifier."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(8, 12, 3)
            self.fc = nn.Linear(12 * 8, 5)

        def forward(self, x):
            x = nn.functional.pad(x.transpose(1, 2), (1, 1))
            x = torch.relu(self.conv(x))[:, :, 2:18]
            return self.fc(torch.flatten(nn.functional.max_pool1d(x, 2), 1))

    path = models.export_torch(Features().eval(), (1, 20, 8),
                               models.workdir() / f"features-{exporter}.onnx",
                               13 if exporter == "legacy" else 18, exporter == "dynamo")
    return models.quantize_qdq(path, models.seeded_inputs((1, 20, 8), 8, 1), "int8")


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_time_major_features_transposed_padded_and_sliced_run_bit_exact(
        exporter: str, target: str, tmp_path: Path) -> None:
    """Transpose, Pad and Slice of [N, C, L] signals are lifted with them (their perm,
    pads and axes gain the unit axis) and run on the chip as data movement."""
    from cimc.cli import main

    model = _features_model(exporter)
    x = models.seeded_inputs((1, 20, 8), 3, 5)
    np.save(tmp_path / "x.npy", x)
    for engine in ("sim", "reference"):
        assert main(["run", str(model), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                     str(tmp_path / f"{engine}.npy"), "--engine", engine, "--target", target,
                     "-q"]) == 0
    sim, reference = np.load(tmp_path / "sim.npy"), np.load(tmp_path / "reference.npy")
    np.testing.assert_array_equal(sim, reference)
    compiled = cimc.compile(model, target)
    assert "gather" in {op.kind for op in compiled.module.ops()}
    scale = float(numpy_helper.to_array(next(
        i for i in onnx.load(model).graph.initializer if i.name == "logits_scale")))
    oracle = ExactOracle(model).run_samples(x)
    assert np.abs(reference - oracle).max() <= scale * 1.001


@pytest.mark.parametrize(("exporter", "opset"), [("legacy", 13), ("dynamo", 18)])
def test_a_mean_over_time_of_a_1d_signal_runs_bit_exact(exporter: str, opset: int,
                                                         tmp_path: Path) -> None:
    """Conv1d -> ReLU -> mean over L -> Linear: the ReduceMean's axes (an attribute, or
    after the conversion to opset 18 an input the converter writes as a Constant) name the
    axes of [N, C, 1, L], the unit one too without keepdims; its mean over W of a one-row
    image is a global average pool."""
    import torch
    from checks import assert_simulation_equals_reference, assert_within_a_quantum_of_the_oracle
    from torch import nn

    torch.manual_seed(0)

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv1d(8, 16, 3, padding=1), nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean(2))

    path = models.export_torch(Pooled().eval(), (1, 8, 40), tmp_path / "m.onnx", opset,
                               exporter == "dynamo")
    x = np.random.default_rng(0).standard_normal((8, 8, 40)).astype(np.float32)
    model = models.quantize_qdq(path, x, "int8")
    program = cimc.compile(model, "isaac")
    program.save(tmp_path / "prog.s")
    assert_simulation_equals_reference(program, tmp_path / "prog.s", x[:2])
    assert_within_a_quantum_of_the_oracle(program, model, x)
