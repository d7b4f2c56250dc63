"""What the MNIST mutant corpus (tests/test_mutants.py) found, each case reduced to
a small model built inline: run `cimc ...` in-process and check what the user
sees on stderr (at the file-descriptor level: onnxruntime logs from C++)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.cli import main


def _save(path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto]) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def _only_the_error(capfd: pytest.CaptureFixture[str], *says: str) -> None:
    """stderr holds cimc's own lines only (warnings, then one error), nothing else."""
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert all(line.startswith("cimc: ") for line in lines), err
    assert lines[-1].startswith("cimc: error: ") and all(s in lines[-1] for s in says), err


def test_a_float_model_onnxruntime_cannot_run_gets_only_cimc_s_error(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Calibration fails (onnxruntime refuses pads larger than the kernel): its own log
    line (colored, timestamped) came before cimc's message saying the same."""
    model = _save(tmp_path / "pads.onnx",
                  [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                                    pads=[3, 3, 3, 3])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 10, 10])], [])
    assert main([model, "-o", str(tmp_path / "out" / "prog.s")]) == 1
    _only_the_error(capfd, "pads.onnx", "could not quantize", "Pad should be smaller")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_constant_folding_that_onnxruntime_refuses_logs_nothing(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Folding a constant subgraph onnxruntime cannot run (a 2-D global pool) is left
    to the checks after it: onnxruntime's error log of the attempt is not the user's."""
    model = _save(tmp_path / "fold.onnx",
                  [helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
                   helper.make_node("Add", ["x", "p"], ["y"], name="add")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6])],
                  [numpy_helper.from_array(np.ones((4, 6), np.float32), "c")])
    assert main(["opt", model]) == 1
    _only_the_error(capfd, "fold.onnx", "'pool'")


def test_an_output_listed_twice_is_named(tmp_path: Path,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    """The second listing lost the shape inferred for the first: the message blamed
    dynamic shapes ('pin the input shapes with --input-shape')."""
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = _save(tmp_path / "twice.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [y, y], [])
    assert main(["opt", model]) == 1
    _only_the_error(capfd, "twice.onnx", "output 'y' is listed 2 times")


def test_a_quantized_clip_at_the_float_limits_is_the_identity(tmp_path: Path) -> None:
    """Clip(min=-FLT_MAX, max=FLT_MAX) between QDQ pairs (a requantization to int8):
    the reference's bounds overflowed int64 and clamped every code to the lowest; the
    chip computed it right. Both now equal the exact oracle."""
    from cimc.reference.oracle import exact_outputs

    limit = float(np.finfo(np.float32).max)
    init = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
            numpy_helper.from_array(np.array(0.03, np.float32), "s2"),
            numpy_helper.from_array(np.array(0, np.int8), "z2"),
            numpy_helper.from_array(np.array(-limit, np.float32), "lo"),
            numpy_helper.from_array(np.array(limit, np.float32), "hi")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["c"], name="clip"),
             helper.make_node("QuantizeLinear", ["c", "s2", "z2"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["y"])]
    model = _save(tmp_path / "clip.onnx", nodes,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], init)
    x = np.random.default_rng(0).uniform(-2.5, 2.5, (1, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", model, "--engine", "reference", "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), exact_outputs(model, {"x": x})[0])


def test_weights_whose_dims_the_file_does_not_hold_are_left_to_the_checker(
        tmp_path: Path) -> None:
    """The capacity count runs before the ONNX checker: a small file whose weights claim
    2^40 rows was counted block by block (it hung); the checker now says what is wrong."""
    from mnist_mutants import MNIST, Mutant, check

    model = onnx.load(MNIST)
    weights = next(t for t in model.graph.initializer if t.name == "3.weight_quantized")
    weights.dims[0] = 1 << 40
    outcome = check(Mutant(0, "dims", "dims", model.SerializeToString()), tmp_path, timeout=30)
    assert outcome.kind == "error" and "raw_data size" in outcome.detail, outcome.detail
