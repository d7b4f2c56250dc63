"""A model too big for the target is refused right after import, from its weights'
shapes, before quantization; the shape count equals what the tile pass counts."""

from __future__ import annotations

from pathlib import Path

import backend_models
import models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.cli import main
from cimc.dialect.chip import block_columns
from cimc.frontend.capacity import weight_columns
from cimc.frontend.importer import import_onnx
from cimc.pass_manager import parse_pipeline, run_pipeline
from cimc.pipeline import FRONTEND
from cimc.targets import load_target


@pytest.mark.parametrize(("model", "target"), [
    (lambda: backend_models.quantized_model("mnist_tiny"), "tiny"),
    (lambda: backend_models.quantized_model("mlp_tiny"), "tiny"),
    (lambda: models.quantized_model("separable"), "tiny"),  # depthwise: block-diagonal
    (lambda: models.quantized_model("separable"), "pimcomp"),
    (lambda: models.quantized_model("residual"), "isaac"),
])
def test_shape_count_equals_the_tile_pass(model, target: str) -> None:  # type: ignore[no-untyped-def]
    path = str(model())
    chip = load_target(target)
    counted = weight_columns(onnx.load(path).graph, chip)
    module = import_onnx(path)
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    run_pipeline(module, parse_pipeline("lower,tile", load_target(target)))
    tiled = sum(block_columns(*module.values[op.inputs[1]].shape, op.attrs["blocks"], chip)
                for op in module.ops() if op.kind == "matvec")
    assert counted == tiled > 0


def float_gemm(path: Path, k: int, n: int) -> Path:
    """A float model y = x @ W (W: k x n, seeded random)."""
    weights = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, k))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, n))],
        initializer=[numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def fixed_tiny(tmp_path: Path) -> Path:
    """The tiny target with crossbars that cannot be reprogrammed: no phases."""
    text = (Path(__file__).parents[1] / "targets" / "tiny.toml").read_text()
    path = tmp_path / "fixed.toml"
    path.write_text(text.replace('name = "tiny"', 'name = "fixed"').replace(
        "reprogrammable = true", "reprogrammable = false"))
    return path


def test_a_float_model_too_big_is_refused_before_quantization(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal comes before the calibration data is even read (this data has the
    wrong shape, which quantization would report): on a target whose crossbars cannot be
    reprogrammed, when all the weights do not fit."""
    model = float_gemm(tmp_path / "big.onnx", 64, 64)  # 64 crossbars on tiny, which has 32
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.zeros((2, 3), dtype=np.float32))
    status = main(["compile", str(model), "-o", str(tmp_path / "prog.s"), "--target",
                   str(fixed_tiny(tmp_path)), "--calibrate", str(calibration)])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{model}: the model needs at least 64 crossbars on 16 cores but target 'fixed' " \
        "has 32 crossbars on 8 cores" in err
    assert not (tmp_path / "prog.s").exists()


def test_a_layer_too_big_for_phases_is_refused_before_quantization(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a reprogrammable target a model runs in phases, a layer split by output
    channels; one output channel must fit: 130 row blocks of 16 rows x 4 slices need 33
    crossbars of tiny's 32."""
    model = float_gemm(tmp_path / "tall.onnx", 2080, 4)
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.zeros((2, 3), dtype=np.float32))
    status = main(["compile", str(model), "-o", str(tmp_path / "prog.s"), "--target", "tiny",
                   "--calibrate", str(calibration)])
    err = capsys.readouterr().err
    assert status == 1
    assert "one output channel's weights (130 blocks of 16 rows) need 33 crossbars" in err
    assert str(model) in err and err.count("\n") == 1
    assert not (tmp_path / "prog.s").exists()


@pytest.mark.parametrize("group", [[1, 2], "1", 1.5])
def test_a_malformed_conv_group_is_left_to_the_checker(
        tmp_path: Path, group: object, capsys: pytest.CaptureFixture[str]) -> None:
    """The shape count skips an attribute of the wrong type; the message is the checker's,
    naming the file, not a traceback from the count."""
    weights = np.ones((4, 1, 3, 3), dtype=np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=group)
    graph = helper.make_graph(
        [conv], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1, 8, 8))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 6, 6))],
        initializer=[numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    status = main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "prog.s")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("cimc: error: ") and str(tmp_path / "m.onnx") in err
    assert "group" in err, err
    assert "Traceback" not in err and not (tmp_path / "prog.s").exists()


def test_a_float_gemm_tail_is_not_counted(tmp_path: Path) -> None:
    """A wide float Gemm after the last DequantizeLinear runs on the host: the shape count
    leaves it out (it refused a model that compiles onto 2 crossbars of tiny)."""
    from fuzz_models import ConvSpec, QdqBuilder, Quant

    b = QdqBuilder(np.random.default_rng(0))
    x = b.input((1, 2, 4, 4), Quant(0.05, -3, True))
    y = b.conv(x, ConvSpec(4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu", "small"),
               np.full(4, 0.01, np.float32), Quant(0.02, -128, True), False)
    y = b.head(y, 512, "gemm", np.full(512, 0.01, np.float32), Quant(0.1, 3, True), "small",
               "", False, qdq_flatten=False)
    model = b.g.save(tmp_path / "m.onnx", x, [y])
    assert main(["compile", str(model), "-o", str(tmp_path / "prog.s"), "--target", "tiny"]) == 0
    test_shape_count_equals_the_tile_pass(lambda: model, "tiny")
