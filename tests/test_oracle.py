"""The exact oracle agrees with onnx's ReferenceEvaluator, and nothing else is used as one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.version_converter import convert_version

from cimc.reference.oracle import ExactOracle

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist"


def test_oracle_equals_reference_evaluator_on_the_bundled_mnist_model() -> None:
    # Both compute DequantizeLinear -> float op -> QuantizeLinear; neither depends on the
    # CPU's int8 instructions, so they agree on every machine.
    model = onnx.load(str(MNIST / "mnist_cnn_qdq.onnx"))
    images = np.load(MNIST / "test_digits.npz")["images"][:20].astype(np.float32)[:, None] / 255
    evaluator = ReferenceEvaluator(convert_version(model, 21))
    name = model.graph.input[0].name
    expected = np.concatenate([evaluator.run(None, {name: x[None]})[0] for x in images])
    np.testing.assert_array_equal(ExactOracle(model).run_samples(images), expected)


def test_no_onnxruntime_session_outside_the_oracle() -> None:
    # A default session is not exact on CPUs without VNNI; only cimc/reference/oracle.py may
    # make one.
    session = re.compile(r"InferenceSession\(")
    offenders = [str(path.relative_to(ROOT))
                 for folder in ("tests", "examples", "bench", "cimc", "passes", "isa")
                 for path in (ROOT / folder).rglob("*.py")
                 if session.search(path.read_text()) and path.name not in ("oracle.py",
                                                                           "quantize.py",
                                                                           "test_oracle.py")]
    assert offenders == []
