"""Softmax over each token's scores on the chip (issue 13): a quantized softmax over the
last axis of [1,T,N] (T > 1) is the integer softmax of cimc/reference/softmax.py
(exp by a table of 2^14 · exp(-sx · d), d = max - x; the row sum; a division by it,
`vdiv.i32`), the chip's `pixel_softmax`; a classifier's softmax [N,K] (also of a batch)
stays float on the host. QDQ softmaxes with every input code are within one quantum of
the exact oracle and simulate bit for bit equal to the reference (attention blocks:
tests/test_attention.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from checks import assert_simulation_equals_reference
from models import qdq_around
from onnx import TensorProto, helper

import cimc
from cimc.reference.oracle import ExactOracle

SHAPE = [1, 8, 32]


def _qdq_softmax(path: Path, x_type: int, sx: float, zx: int, y_type: int, sy: float,
                 zy: int, shape: list[int]) -> Path:
    """input -> Q -> DQ -> Softmax(axis -1) -> Q -> DQ -> output, as quantize_static writes
    a softmax of quantized scores."""
    node = helper.make_node("Softmax", ["xd"], ["t"], name="softmax", axis=-1)
    onnx.save(qdq_around([node], shape, shape, [], (x_type, sx, zx), (y_type, sy, zy), 13,
                         "softmax"), path)
    return path


@pytest.mark.parametrize("x_dtype", ["int8", "uint8"])
@pytest.mark.parametrize(("y_dtype", "zy"), [("uint8", 0), ("int8", -128)])
@pytest.mark.parametrize("sx", [0.02, 0.1, 0.4])
def test_integer_softmax_within_a_quantum_of_the_oracle_and_simulated(
        x_dtype: str, y_dtype: str, zy: int, sx: float, tmp_path: Path) -> None:
    """Every input code in every row position; the result scale 1/255 of a [0, 1] range."""
    types = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}
    low = -128 if x_dtype == "int8" else 0
    path = _qdq_softmax(tmp_path / "m.onnx", types[x_dtype], sx, low + 128, types[y_dtype],
                        1 / 255, zy, SHAPE)
    rng = np.random.default_rng(0)
    codes = np.stack([rng.permutation(256) for _ in range(4)]).reshape(4, *SHAPE[1:])
    x = ((codes - 128) * sx).astype(np.float32)
    module = cimc.api.prepare(path)
    assert [op.kind for op in module.ops()] == ["quantize", "softmax", "dequantize"]
    got = cimc.run_reference(module, {"input": x})["output"]
    assert np.abs(got - ExactOracle(path).run_samples(x)).max() <= 1 / 255 * 1.0001
    program = cimc.compile(path, "isaac")
    assert "pixel_softmax" in [op.kind for op in program.module.ops()]
    program.save(tmp_path / "p.s")
    assert "vdiv.i32" in (tmp_path / "p.s").read_text()
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


@pytest.mark.parametrize("batch", [1, 4])
def test_a_classifier_softmax_stays_float_on_the_host(batch: int, tmp_path: Path) -> None:
    path = _qdq_softmax(tmp_path / "m.onnx", TensorProto.INT8, 0.1, 0, TensorProto.UINT8,
                        1 / 255, 0, [batch, 10])
    module = cimc.api.prepare(path)
    softmax = next(op for op in module.ops() if op.kind == "softmax")
    assert module.values[softmax.outputs[0]].dtype == "f32"
