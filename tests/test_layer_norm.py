"""LayerNormalization (issue 13): imported as `layer_norm` (Y; float in float64) with its
Mean and InvStdDev outputs as reduce_mean, sub, mul, add and pow (onnx's node cases:
tests/test_node_cases.py). A QDQ LayerNorm over the last axis of tokens [1,T,D] is the
integer LayerNorm of cimc/reference/layer_norm.py (exact sums of the codes and their
squares, `visqrt.i32`, gamma and beta as per-channel fixed point), the chip's
`pixel_layernorm`: within one quantum of the exact oracle for random, constant, two-valued
and one-off codes over several D, scales, epsilons and gammas/betas with zero and
negative values, and simulated bit for bit equal to the reference. One over other axes
stays float and is refused naming it. Encoders with LayerNorm: tests/test_attention.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from checks import assert_simulation_equals_reference
from models import qdq_around
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.diagnostics import CimcError
from cimc.reference.layer_norm import inverse_sqrt
from cimc.reference.oracle import ExactOracle

TYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}


def _qdq_layer_norm(path: Path, x_dtype: str, sx: float, zx: int, sy: float, zy: int,
                    shape: list[int], gamma: np.ndarray, beta: np.ndarray | None,
                    epsilon: float, axis: int = -1, then_matmul: bool = False) -> Path:
    """input -> Q -> DQ -> LayerNormalization -> Q -> DQ -> output (i8 result), or
    `then_matmul` -> (DQ'd int8 weights) MatMul -> Q -> DQ -> output."""
    consts = [numpy_helper.from_array(gamma.astype(np.float32), "gamma")]
    operands = ["xd", "gamma"]
    if beta is not None:
        consts.append(numpy_helper.from_array(beta.astype(np.float32), "beta"))
        operands.append("beta")
    norm = helper.make_node("LayerNormalization", operands, ["t"], name="norm", axis=axis,
                            epsilon=epsilon)
    nodes, out_shape = [norm], shape
    if then_matmul:
        norm.output[0] = "y"
        consts += [helper.make_tensor("w", TensorProto.INT8, [shape[-1], 4],
                                      [(i % 7) - 3 for i in range(4 * shape[-1])]),
                   numpy_helper.from_array(np.array(0.01, np.float32), "sw"),
                   helper.make_tensor("zw", TensorProto.INT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["yd"]),
                  helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"]),
                  helper.make_node("MatMul", ["yd", "wd"], ["t"])]
        out_shape = [*shape[:-1], 4]
    onnx.save(qdq_around(nodes, shape, out_shape, consts, (TYPES[x_dtype], sx, zx),
                         (TensorProto.INT8, sy, zy), 17, "ln"), path)
    return path


def _codes(rng: np.random.Generator, tokens: int, d: int) -> np.ndarray:
    """Samples of codes 0..255: random, constant tokens, two-valued (the largest
    variance), one code off by one (the smallest nonzero variance), a narrow band."""
    codes = rng.integers(0, 256, (6, tokens, d))
    codes[1] = rng.integers(0, 256, (tokens, 1))
    codes[2] = np.where(rng.random((tokens, d)) < 0.5, 0, 255)
    codes[3] = rng.integers(1, 255, (tokens, 1))
    codes[3, :, 0] += 1
    codes[4] = rng.integers(120, 136, (tokens, d))
    return codes


def _layer(rng: np.random.Generator, d: int, gamma_size: float, beta_size: float
           ) -> tuple[np.ndarray, np.ndarray]:
    gamma = rng.standard_normal(d) * gamma_size
    gamma[0], gamma[1] = 0.0, -abs(gamma[1])
    beta = rng.standard_normal(d) * beta_size
    beta[-1] = 0.0
    return gamma, beta


# (D, sx, epsilon, gamma size, beta size, sy): gamma/sy up to a few hundred
CASES = [(2, 0.1, 1e-5, 1.0, 0.5, 0.02), (3, 0.3, 1e-3, 2.0, 0.0, 0.05),
         (8, 0.05, 1e-5, 1.0, 1.0, 0.03), (16, 0.02, 0.1, 0.5, 2.0, 0.02),
         (32, 0.05, 1e-5, 1.0, 0.3, 0.03), (32, 0.005, 1e-6, 0.2, 0.1, 0.01),
         (64, 0.1, 1e-5, 1.0, 0.5, 0.05), (100, 0.3, 1e-5, 3.0, 1.0, 0.25),
         (128, 0.05, 1e-5, 1.0, 0.5, 0.06), (256, 0.02, 1e-5, 1.0, 0.5, 0.2)]


@pytest.mark.parametrize("x_dtype", ["int8", "uint8"])
@pytest.mark.parametrize(("d", "sx", "epsilon", "gamma_size", "beta_size", "sy"), CASES)
def test_integer_layer_norm_within_a_quantum_of_the_oracle(
        x_dtype: str, d: int, sx: float, epsilon: float, gamma_size: float,
        beta_size: float, sy: float, tmp_path: Path) -> None:
    rng = np.random.default_rng(d)
    gamma, beta = _layer(rng, d, gamma_size, beta_size)
    low = -128 if x_dtype == "int8" else 0
    zx = low + int(rng.integers(0, 256))
    path = _qdq_layer_norm(tmp_path / "m.onnx", x_dtype, sx, zx, sy, -3, [1, 8, d], gamma,
                           beta, epsilon)
    x = ((_codes(rng, 8, d) + low - zx) * sx).astype(np.float32)
    module = cimc.api.prepare(path)
    assert [op.kind for op in module.ops()] == ["quantize", "layer_norm", "dequantize"]
    got = cimc.run_reference(module, {"input": x})["output"]
    assert np.abs(got - ExactOracle(path).run_samples(x)).max() <= sy * 1.0001


@pytest.mark.parametrize(("x_dtype", "d", "beta", "gamma_size", "target"),
                         [("int8", 32, True, 1.0, "isaac"), ("uint8", 8, False, 1.0, "edge"),
                          ("int8", 64, True, 1.0, "edge"), ("uint8", 100, True, 1.0, "isaac"),
                          ("int8", 256, True, 10.0, "isaac")])
def test_pixel_layernorm_simulates_bit_exact(x_dtype: str, d: int, beta: bool,
                                             gamma_size: float, target: str,
                                             tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    gamma, bias = _layer(rng, d, gamma_size, 0.5 * gamma_size)
    low = -128 if x_dtype == "int8" else 0
    sx = 0.05
    path = _qdq_layer_norm(tmp_path / "m.onnx", x_dtype, sx, low + 100, 0.03, 5, [1, 8, d],
                           gamma, bias if beta else None, 1e-5)
    x = ((_codes(rng, 8, d) - 100) * sx).astype(np.float32)
    program = cimc.compile(path, target)
    assert "pixel_layernorm" in [op.kind for op in program.module.ops()]
    program.save(tmp_path / "p.s")
    assert "visqrt.i32" in (tmp_path / "p.s").read_text()
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)
    assert abs(program.report["cycles"] / program.simulated_report["cycles"] - 1) < 0.01


def test_inverse_sqrt_is_the_floor_of_the_formula() -> None:
    q = np.concatenate([np.arange(1, 5000), np.array([2**31 - 1, 2**30, 3**19, 10**9 + 7])])
    for k in (0, 15, 30, 45):
        got = inverse_sqrt(q, k)
        assert all(r * r * v <= 4**k < (r + 1) * (r + 1) * v
                   for r, v in zip(got.tolist(), q.tolist(), strict=True))
    assert inverse_sqrt(np.array([1]), 30)[0] == 2**30 and math.isqrt(4**30 // 3) == \
        inverse_sqrt(np.array([3]), 30)[0]


def _float_model(tmp_path: Path, axis: int, shape: list[int]) -> tuple[Path, np.ndarray]:
    """MatMul -> LayerNormalization -> MatMul, float, for quantize-by-calibration."""
    rng = np.random.default_rng(0)
    width = shape[-1]
    norm = shape[axis:] if axis >= 0 else shape[axis:]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), name)
             for name, s in (("w0", (width, width)), ("w1", (width, 8)), ("g", norm),
                             ("b", norm))]
    nodes = [helper.make_node("MatMul", ["input", "w0"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], name="norm",
                              axis=axis),
             helper.make_node("MatMul", ["n", "w1"], ["output"])]
    graph = helper.make_graph(
        nodes, "ln", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [*shape[:-1], 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    return tmp_path / "m.onnx", rng.standard_normal((4, *shape[1:])).astype(np.float32)


def test_a_layer_norm_between_integer_layers_is_the_chips(tmp_path: Path) -> None:
    path, x = _float_model(tmp_path, -1, [1, 8, 16])
    program = cimc.compile(path, "isaac", calibrate={"input": x})
    assert [op.kind for op in program.module.ops()].count("pixel_layernorm") == 1
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


@pytest.mark.parametrize(("axis", "shape"), [(1, [1, 8, 16]), (-1, [8, 16])])
def test_a_layer_norm_not_over_the_last_axis_of_tokens_is_refused_naming_it(
        axis: int, shape: list[int], tmp_path: Path) -> None:
    gamma = np.ones(shape[axis:]) if axis >= 0 else np.ones(shape[-1])
    path = _qdq_layer_norm(tmp_path / "m.onnx", "int8", 0.05, 0, 0.03, 0, shape, gamma, None,
                           1e-5, axis, then_matmul=True)
    with pytest.raises(CimcError, match=r"op 'norm' \(layer_norm\) computes in float between "
                                        r"integer layers.*over the last axis of tokens"):
        cimc.compile(path, "isaac")


@pytest.mark.parametrize(("d", "gamma", "message"), [
    (400, 1.0, r"400 channels at input scale 0.02 and epsilon 1e-05 leave int32"),
    (256, 2e5, r"gamma / sy up to 2e\+07 over 256 channels would leave the result")])
def test_layer_norms_beyond_int32_or_a_quantum_are_refused_naming_the_op(
        d: int, gamma: float, message: str, tmp_path: Path) -> None:
    path = _qdq_layer_norm(tmp_path / "m.onnx", "int8", 0.02, 0, 0.01, 0, [1, 4, d],
                           np.full(d, gamma), None, 1e-5)
    with pytest.raises(CimcError, match=r"op 'norm' \(layer_norm\): " + message):
        cimc.compile(path, "isaac")


@pytest.mark.parametrize("d", [16, 64, 256])
@pytest.mark.parametrize("gamma_over_sy", [200.0, 2000.0])
def test_large_gammas_with_results_inside_the_clamp_stay_within_a_quantum(
        d: int, gamma_over_sy: float, tmp_path: Path) -> None:
    """Tokens of one code with one channel off by 1 or 2 (the smallest variances, where
    the rounding of eps·D²/sx² weighs most: eps makes it D/4, a fraction of V = D - 1)
    and narrow bands; betas that put the results of the large gamma inside the clamp."""
    rng = np.random.default_rng(d)
    sy, sx = 0.05, 0.1
    gamma = np.full(d, gamma_over_sy * sy)
    beta = gamma * math.sqrt(0.8 / (d - 1)) + rng.uniform(-60, 60, d) * sy
    path = _qdq_layer_norm(tmp_path / "m.onnx", "int8", sx, 0, sy, 0, [1, 16, d], gamma, beta,
                           sx * sx / (4 * d))
    codes = rng.integers(-100, 100, (4, 16, 1)) + np.zeros((1, 1, d), dtype=np.int64)
    for t in range(16):
        codes[:3, t, rng.integers(0, d)] += rng.choice([1, -1, 2])
    codes[3] = rng.integers(-3, 3, (16, d)) + rng.integers(-100, 100, (16, 1))
    x = (codes * sx).astype(np.float32)
    exact = ExactOracle(path).run_samples(x)
    assert (np.abs(exact) < 127 * sy).mean() > 0.1  # many results inside the clamp
    got = cimc.run_reference(cimc.api.prepare(path), {"input": x})["output"]
    assert np.abs(got - exact).max() <= sy * 1.0001
