"""The exact oracle: what an ONNX model computes, independent of the CPU it runs on.

onnxruntime's default session fuses QDQ patterns into integer kernels, and on
x86 CPUs without VNNI those kernels saturate 16-bit intermediate sums, so its
answers depend on the machine (AMD EPYC with only AVX2 was seen 26 quanta off).
With graph optimizations disabled, onnxruntime runs a QDQ model as written:
DequantizeLinear -> float op -> QuantizeLinear, which is the ONNX semantics.
Operators that are integer kernels by definition (QLinearConv, ConvInteger, ...)
have the same problem with no graph to leave alone, so a model that contains
them runs on onnx's ReferenceEvaluator (numpy, exact integer arithmetic).

Every comparison of cimc with "what the model computes" goes through here:
tests, the demo and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

# Integer kernels whose onnxruntime implementation is CPU-dependent.
INTEGER_KERNELS = frozenset({
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd",
    "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
    "QLinearSigmoid", "QLinearLeakyRelu", "QGemm",
})


REFERENCE_OPSET = 21


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def uses_integer_kernels(model: onnx.ModelProto) -> bool:
    """True when the graph has an operator that onnxruntime runs as an int8 kernel."""
    return any(node.op_type in INTEGER_KERNELS for node in model.graph.node)


class ExactOracle:
    """Runs one model exactly; reuse it for many inputs (the session is built once).

    `optimized=True` gives onnxruntime's default optimized session instead: fast,
    but its int8 kernels are not exact on every CPU, so it is for display beside
    the oracle only, never a reference."""

    def __init__(self, model: str | Path | onnx.ModelProto, optimized: bool = False) -> None:
        proto = _load(model)
        constants = {t.name for t in proto.graph.initializer}
        self.input_names = [i.name for i in proto.graph.input if i.name not in constants]
        self.output_names = [o.name for o in proto.graph.output]
        self._session = None
        if uses_integer_kernels(proto) and not optimized:
            from onnx.reference import ReferenceEvaluator
            from onnx.version_converter import convert_version

            # The evaluator implements only recent versions of the QDQ operators.
            if _default_opset(proto) < REFERENCE_OPSET:
                proto = convert_version(proto, REFERENCE_OPSET)
            self._evaluator: object = ReferenceEvaluator(proto)
            return
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if not optimized:
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._session = onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs for one set of inputs, in graph output order."""
        if self._session is not None:
            return list(self._session.run(None, dict(feeds)))
        return list(self._evaluator.run(None, dict(feeds)))  # type: ignore[attr-defined]

    def run_samples(self, x: np.ndarray, name: str | None = None,
                    batch: int = 1) -> np.ndarray:
        """The first output for samples stacked on axis 0 of `x`, fed `batch` at a time
        to the input `name` (default: the first input)."""
        name = name or self.input_names[0]
        outputs = [self.run({name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
        return np.concatenate(outputs)


def exact_outputs(model: str | Path | onnx.ModelProto,
                  feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of `model` on `feeds`, computed exactly (see the module docstring)."""
    return ExactOracle(model).run(feeds)
