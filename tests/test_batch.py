"""A batch of N > 1 baked into a model's shapes (torch.onnx.export traced with N
samples): `lower` makes the module batch 1 (passes/lower/batch.py), the program
computes one sample, and a run takes the model's samples stacked on axis 0, bit-exact
with the reference (which runs the batch-N module) and within one quantum of the exact
oracle fed N at a time; an op that mixes the samples is an error naming it."""

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
def test_a_batch_4_cnn_runs_its_samples_bit_exact(exporter: str, target: str,
                                                   tmp_path: Path) -> None:
    model = models.quantized_model("batch4_cnn", exporter)
    assert onnx.load(model).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    compiled = cimc.compile(model, target)
    name = compiled.integer.inputs[0]
    assert compiled.integer.values[name].shape == (4, 3, 16, 16)  # the reference's
    assert compiled.module.values[name].shape == (1, 3, 16, 16)  # the chip's
    compiled.save(tmp_path / "prog.s")
    x = models.sample_inputs("batch4_cnn", 2, seed=3)  # two batches: 8 samples
    inputs, expected = reference_codes(compiled.integer, {compiled.integer.inputs[0]: x})
    program = assemble_file(tmp_path / "prog.s")
    image = load_image(tmp_path / "prog.img")
    outputs, _ = run_program(program, image, compiled.target, inputs)
    for port, codes in expected.items():
        assert codes.shape[0] == 8
        np.testing.assert_array_equal(outputs[port], codes)
    got, _ = run_float(program, image, compiled.target,
                       {program.inputs[0].name: x.transpose(0, 2, 3, 1)})
    want = ExactOracle(model).run_samples(x, batch=4)
    output = program.outputs[0]
    assert np.abs(got[output.name] - want).max() <= output.scale * 1.001
    assert (got[output.name].argmax(1) == want.argmax(1)).all()


def test_the_reference_runs_a_batched_model_batch_by_batch() -> None:
    model = models.float_model("batch4_cnn")
    x = models.sample_inputs("batch4_cnn", 1, seed=1)
    got = cimc.run_reference(model, x)
    want = ExactOracle(model).run_samples(x, batch=4)
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-4, atol=1e-5)


def mixing_model(path: Path, node: onnx.NodeProto, output: tuple[int, ...]) -> Path:
    """x[4, 8] -> Gemm -> `node` (reading "h", writing "y")."""
    weights = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["h"]), node], "mix",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (4, 8))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output)],
        initializer=[numpy_helper.from_array(weights, "w"),
                     numpy_helper.from_array(np.array([1, 32], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(("node", "output", "says"), [
    (helper.make_node("Softmax", ["h"], ["y"], axis=0), (4, 8),
     r"\(softmax\) works along the batch axis"),
    (helper.make_node("Reshape", ["h", "shape"], ["y"]), (1, 32),
     r"\(reshape\) turns the 4 samples into shape \[1, 32\]"),
    # onnxruntime's pre-processing fuses the transpose into the Gemm
    (helper.make_node("Transpose", ["h"], ["y"], perm=[1, 0]), (8, 4),
     r"turns the 4 samples into shape \[8, 4\]"),
])
def test_an_op_mixing_the_samples_is_named(node: onnx.NodeProto, output: tuple[int, ...],
                                           says: str, tmp_path: Path) -> None:
    path = mixing_model(tmp_path / "mix.onnx", node, output)
    with pytest.raises(CimcError, match=rf"op '[^']+' .*{says}; the model has a batch of 4 .*"
                                        r"export the model with batch 1"):
        cimc.compile(path, "isaac", calibrate=np.zeros((4, 8), np.float32))
