"""`cimc run --engine reference` against the exact oracle on the shared test models.

The acceptance criterion of the reference: on every test input, each output is
within one quantum (of the output's scale) of the exact oracle (cimc.reference.oracle:
onnxruntime with graph optimizations disabled) running the same QDQ
model, and the top-1 class is the same; float models match to 1e-4 relative.
"""

from __future__ import annotations

import models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cimc.cli import main
from cimc.frontend.importer import import_onnx
from cimc.frontend.quantize import quantize_onnx
from cimc.reference.oracle import ExactOracle

pytestmark = pytest.mark.torch

TEST_INPUTS = 16
TEST_SEED = 1


def oracle_outputs(path, x):
    """The exact oracle (cimc.reference.oracle) on each sample; every test model has batch 1."""
    return ExactOracle(path).run_samples(x, "input")


def cimc_run(tmp_path, model, x, *extra):
    np.save(tmp_path / "x.npy", x)
    status = main(
        [
            "run",
            str(model),
            "--inputs",
            str(tmp_path / "x.npy"),
            "--outputs",
            str(tmp_path / "y.npy"),
            "--engine",
            "reference",
            *extra,
        ]
    )
    assert status == 0
    return np.load(tmp_path / "y.npy")


def output_scale(path):
    """The scale of the quantized logits that the model's final DequantizeLinear reads."""
    model = onnx.load(str(path))
    final = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert final.op_type == "DequantizeLinear"
    scale = next(i for i in model.graph.initializer if i.name == final.input[1])
    return float(onnx.numpy_helper.to_array(scale))


def assert_matches_quantized(ours, expected, scale):
    """Within one quantum everywhere, and the same top-1 class.

    Where the oracle's own two best logits are within two quanta, one quantum
    up on one and down on the other can legitimately swap them (an exact tie
    rounded the other way upstream, see docs/ir.md); there our class must be
    one that the oracle ranks within two quanta of its best.
    """
    steps = np.abs(ours.astype(np.float64) - expected) / scale
    assert steps.max() <= 1 + 1e-3, f"{steps.max():.3f} quanta apart"
    ranked = np.sort(expected, axis=1)
    decisive = (ranked[:, -1] - ranked[:, -2]) > 2.5 * scale
    np.testing.assert_array_equal(ours.argmax(1)[decisive], expected.argmax(1)[decisive])
    chosen = expected[np.arange(len(expected)), ours.argmax(1)]
    assert np.all(chosen >= ranked[:, -1] - 2.5 * scale)


@pytest.mark.parametrize("activations", models.ACTIVATIONS)
@pytest.mark.parametrize("exporter", list(models.EXPORTERS))
@pytest.mark.parametrize("name", models.MODELS)
def test_reference_matches_exact_oracle_on_quantized_models(tmp_path, name, exporter, activations):
    path = models.quantized_model(name, exporter, activations)
    x = models.sample_inputs(name, TEST_INPUTS, TEST_SEED)
    ours = cimc_run(tmp_path, path, x)
    assert ours.dtype == np.float32 and ours.shape == (TEST_INPUTS, 10)
    assert_matches_quantized(ours, oracle_outputs(path, x), output_scale(path))


@pytest.mark.parametrize("exporter", list(models.EXPORTERS))
@pytest.mark.parametrize("name", models.MODELS)
def test_reference_matches_exact_oracle_on_float_models(tmp_path, name, exporter):
    path = models.float_model(name, exporter)
    x = models.sample_inputs(name, TEST_INPUTS, TEST_SEED)
    ours = cimc_run(tmp_path, path, x)
    expected = oracle_outputs(path, x)
    floor = 1e-5 * float(np.abs(expected).max())
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=floor)
    np.testing.assert_array_equal(ours.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("activations", models.ACTIVATIONS)
def test_calibrate_quantizes_like_onnxruntime(tmp_path, activations):
    # the same calibration data and settings as the onnxruntime-quantized test model
    name = "residual"  # batch norm: folded before quantization
    calibration = models.sample_inputs(name, models.CALIBRATION_BATCHES, models.CALIBRATION_SEED)
    np.save(tmp_path / "calibration.npy", calibration)
    x = models.sample_inputs(name, TEST_INPUTS, TEST_SEED)
    reference = models.quantized_model(name, "legacy", activations)
    ours = cimc_run(
        tmp_path,
        models.float_model(name, "legacy"),
        x,
        "--calibrate",
        str(tmp_path / "calibration.npy"),
        "--activations",
        activations,
    )
    assert_matches_quantized(ours, oracle_outputs(reference, x), output_scale(reference))


def test_quantizing_is_deterministic_and_warns_without_calibration_data(tmp_path, capsys):
    path = str(models.float_model("mnist_cnn", "legacy"))
    module = import_onnx(path)
    inputs = {name: module.values[name] for name in module.inputs}
    for out in ("a.onnx", "b.onnx"):
        quantize_onnx(path, tmp_path / out, inputs, None, "uint8")
    assert "accuracy of the quantized model is not meaningful" in capsys.readouterr().err
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "a.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= kinds


def two_input_model(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Relu", ["sum"], ["y"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("sum", "y")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    return path


def test_npz_inputs_and_outputs_are_keyed_by_name(tmp_path):
    path = two_input_model(tmp_path)
    a = np.array([[1.0, -2.0, 3.0], [0.5, 0.5, -9.0]])  # float64 is accepted, two batches
    b = np.array([[-4.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    np.savez(tmp_path / "x.npz", a=a, b=b)
    status = main(
        [
            "run",
            "--engine=reference",
            str(path),
            "--inputs",
            str(tmp_path / "x.npz"),
            "--outputs",
            str(tmp_path / "y.npz"),
        ]
    )
    assert status == 0
    with np.load(tmp_path / "y.npz") as y:
        assert sorted(y.files) == ["sum", "y"]
        assert y["sum"].dtype == np.float32
        np.testing.assert_array_equal(y["sum"], a + b)
        np.testing.assert_array_equal(y["y"], np.maximum(a + b, 0))


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (
            {"a": np.zeros((1, 3))},
            "y.npz",
            "x.npz: arrays must be named after the model inputs (a, b); missing b",
        ),
        (
            {"a": np.zeros((1, 4)), "b": np.zeros((1, 4))},
            "y.npz",
            "input 'a' has shape [1, 4] but the model expects [1, 3]",
        ),
        (
            {"a": np.zeros((1, 3), np.uint8), "b": np.zeros((1, 3))},
            "y.npz",
            "input 'a' has element type uint8 but the model expects floats",
        ),
        (
            {"a": np.zeros((1, 3)), "b": np.zeros((1, 3))},
            "y.npy",
            "y.npy: the model has 2 outputs (sum, y); write them to an .npz file",
        ),
    ],
)
def test_bad_inputs_are_reported_with_the_file_name(tmp_path, capsys, inputs, outputs, message):
    path = two_input_model(tmp_path)
    np.savez(tmp_path / "x.npz", **inputs)
    status = main(
        [
            "run",
            "--engine=reference",
            str(path),
            "--inputs",
            str(tmp_path / "x.npz"),
            "--outputs",
            str(tmp_path / outputs),
        ]
    )
    assert status == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / outputs).exists()


def test_calibrating_a_quantized_model_is_refused(tmp_path, capsys):
    path = models.quantized_model("mlp", "legacy", "int8")
    x = models.sample_inputs("mlp", 2, 0)
    np.save(tmp_path / "x.npy", x)
    status = main(
        [
            "run",
            "--engine=reference",
            str(path),
            "--inputs",
            str(tmp_path / "x.npy"),
            "--outputs",
            str(tmp_path / "y.npy"),
            "--calibrate",
            str(tmp_path / "x.npy"),
        ]
    )
    assert status == 1
    assert "already quantized; drop --calibrate" in capsys.readouterr().err


@pytest.mark.slow
def test_reference_runs_a_quantized_resnet18_at_224_within_one_quantum(tmp_path):
    path = models.quantized_model("resnet18", "legacy", "uint8")
    x = models.sample_inputs("resnet18", 4, TEST_SEED)
    ours = cimc_run(tmp_path, path, x)
    assert_matches_quantized(ours, oracle_outputs(path, x), output_scale(path))


def test_input_shape_pins_a_dynamic_batch(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "dynamic.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path
    )
    x = np.array([[1.0, -1.0, 2.0], [-3.0, 4.0, -5.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    args = [
        "run",
        "--engine=reference",
        str(path),
        "--inputs",
        str(tmp_path / "x.npy"),
        "--outputs",
        str(tmp_path / "y.npy"),
    ]
    assert main(args) == 1  # the batch must be pinned
    assert main([*args, "--input-shape", "x=1,3"]) == 0  # two batches of one
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.maximum(x, 0))
