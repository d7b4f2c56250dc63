"""Resize in linear and cubic mode (cimc/reference/resize.py): float, on the reference,
against onnx's ReferenceEvaluator over coordinate transformations, scales and sizes,
antialias and exclude_outside. Quantized, a linear upsampling by an integer scale with
half_pixel or asymmetric coordinates is a depthwise ConvTranspose on the chip
(canonicalize), bit-exact and within a quantum of the oracle; other linear or cubic
resizes between integer layers are named, after the last DequantizeLinear they are the
host's float tail."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import cimc
from cimc.diagnostics import CimcError
from cimc.frontend.importer import import_onnx
from cimc.reference import run_module

# half_pixel_symmetric is checked by onnx's node cases (tests/test_node_cases.py): here its
# coordinates land one ulp above integers, where onnx's evaluator (adding its padding
# width in float64) takes the left neighbour's weight for the right one's.
TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
              "tf_crop_and_resize"]
CASES = [(mode, transform, scales, antialias, exclude)
         for mode, transform, scales, (antialias, exclude) in itertools.product(
             ["linear", "cubic"], TRANSFORMS, [(2.0, 1.5), (0.5, 0.75), (0.6, 3.0)],
             [(0, 0), (1, 0), (0, 1)])]


def _model(path: Path, mode: str, transform: str, scales: tuple[float, float],
           antialias: int, exclude: int, shape: tuple[int, ...] = (1, 2, 6, 7)) -> Path:
    out = [shape[0], shape[1], int(shape[2] * scales[0]), int(shape[3] * scales[1])]
    inits = [numpy_helper.from_array(np.array([0.1, 0.2, 0.8, 0.9], np.float32), "roi"),
             numpy_helper.from_array(np.array(scales, np.float32), "scales")]
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode=mode, axes=[2, 3],
                            coordinate_transformation_mode=transform, antialias=antialias,
                            exclude_outside=exclude, extrapolation_value=-1.5)
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(("mode", "transform", "scales", "antialias", "exclude"), CASES)
def test_resize_matches_onnx_reference(mode: str, transform: str, scales: tuple[float, float],
                                       antialias: int, exclude: int, tmp_path: Path) -> None:
    model = _model(tmp_path / "r.onnx", mode, transform, scales, antialias, exclude)
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 7)).astype(np.float32)
    module = import_onnx(model)
    got = run_module(module, {"x": x})["y"]
    want = ReferenceEvaluator(str(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _quantized_unet_tail(path: Path, resize_then_conv: bool, transform: str = "align_corners",
                         scale: float = 2.0) -> Path:
    """conv -> Resize (bilinear by `scale`) [-> conv], quantized by quantize_static."""
    import models

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "scales"], ["r" if resize_then_conv else "y"],
                              mode="linear", name="up",
                              coordinate_transformation_mode=transform)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
                                     "w0"),
             numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")]
    if resize_then_conv:
        nodes.append(helper.make_node("Conv", ["r", "w1"], ["y"], pads=[1, 1, 1, 1]))
        inits.append(numpy_helper.from_array(
            rng.standard_normal((3, 4, 3, 3)).astype(np.float32), "w1"))
    channels = 3 if resize_then_conv else 4
    graph = helper.make_graph(nodes, "u", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, (1, 2, 4, 4))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, (1, channels, int(4 * scale), int(4 * scale)))], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return models.quantize_qdq(path, rng.standard_normal((8, 2, 4, 4)).astype(np.float32),
                               "int8")


def test_a_bilinear_resize_between_integer_layers_is_named(tmp_path: Path) -> None:
    """align_corners weights (k / 7 here) are not exact in integers."""
    model = _quantized_unet_tail(tmp_path / "u.onnx", resize_then_conv=True)
    with pytest.raises(CimcError, match=r"'up' \(resize\).*align_corners=False"):
        cimc.compile(model, "isaac")


@pytest.mark.parametrize(("transform", "scale", "target"), [
    ("half_pixel", 2.0, "isaac"), ("asymmetric", 2.0, "edge"),
    ("pytorch_half_pixel", 4.0, "isaac")])
def test_bilinear_upsampling_by_an_integer_scale_is_a_conv_on_the_chip(
        transform: str, scale: float, target: str, tmp_path: Path) -> None:
    """The codes with their edges repeated (a gather), then a depthwise conv whose
    weights are the interpolation's, k / 2^7: bit-exact, within a quantum of the
    oracle."""
    from checks import output_scale

    from cimc.reference.oracle import ExactOracle

    model = _quantized_unet_tail(tmp_path / "u.onnx", True, transform, scale)
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 4)).astype(np.float32)
    program = cimc.compile(model, target)
    kinds = [op.kind for op in program.module.ops()]
    assert "gather" in kinds and kinds.count("matvec") == 3
    simulated = program.simulate(x).outputs["y"]
    reference = cimc.run_reference(program.integer, {"input": x})["y"]
    np.testing.assert_array_equal(simulated, reference)
    oracle = ExactOracle(model).run_samples(x)
    assert np.abs(reference - oracle).max() <= output_scale(program.integer) * 1.0001


def test_a_bilinear_resize_ending_the_model_is_the_hosts_float_tail(tmp_path: Path) -> None:
    model = _quantized_unet_tail(tmp_path / "u.onnx", resize_then_conv=False)
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32)
    program = cimc.compile(model, "isaac")
    simulated = program.simulate(x).outputs["y"]
    np.testing.assert_array_equal(simulated, cimc.run_reference(program.integer,
                                                                {"input": x})["y"])
