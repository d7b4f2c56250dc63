"""Post-training quantization of a float ONNX model with onnxruntime.

The model is pre-processed (constant and batch-norm folding) and quantized
by `onnxruntime.quantization.quantize_static` in QDQ format: int8 weights per
output channel, int8 or uint8 activations per tensor, ranges from min/max
calibration. The result is an ONNX file that import-onnx reads like any other
QDQ model. Given the same model and data, the output is the same.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cimc.diagnostics import CimcError, warn
from cimc.ir.module import Module, TensorType

if TYPE_CHECKING:
    import onnx

    from cimc.targets import Target

ACTIVATIONS = ("int8", "uint8")
RANDOM_SAMPLES = 8
RANDOM_SEED = 0
# The first opset whose DequantizeLinear takes per-channel scales (an `axis`).
PER_CHANNEL_OPSET = 13


def is_quantized(module: Module) -> bool:
    """Whether an imported module already carries quantization (QDQ or QLinear ops)."""
    return any(op.kind in ("quantize", "dequantize") for op in module.ops())


def random_calibration(inputs: dict[str, TensorType]) -> dict[str, np.ndarray]:
    """RANDOM_SAMPLES seeded standard-normal batches per input, stacked on axis 0
    (a 0-d input, which cannot be stacked, gets one value for all)."""
    rng = np.random.default_rng(RANDOM_SEED)
    data = {}
    for name, ty in inputs.items():
        shape = (ty.shape[0] * RANDOM_SAMPLES, *ty.shape[1:]) if ty.shape else ()
        data[name] = np.asarray(rng.standard_normal(shape)).astype(ty.numpy_dtype)
    return data


def _samples(
    calibration: dict[str, np.ndarray], inputs: dict[str, TensorType]
) -> Iterator[dict[str, np.ndarray]]:
    """One feed per model batch in the calibration data (a 0-d input, which cannot be
    stacked, is the same in every feed)."""
    counts = {name: len(calibration[name]) // ty.shape[0] for name, ty in inputs.items()
              if ty.shape}
    for i in range(min(counts.values(), default=1)):
        yield {
            name: calibration[name][i * ty.shape[0] : (i + 1) * ty.shape[0]] if ty.shape
            else calibration[name] for name, ty in inputs.items()
        }


def _prepare(path: str, prepared: Path) -> None:
    """onnxruntime's basic graph optimizations (constant folding, batch-norm folding).

    This is the optimization step of onnxruntime's quant_pre_process, which
    itself would import its torch export helpers.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(prepared)
    # Its notes on removed initializers are not the user's concern, and a model it cannot
    # load is reported by quantize_onnx as one CimcError.
    options.log_severity_level = 4
    onnxruntime.InferenceSession(_loadable(path), options, providers=["CPUExecutionProvider"])


def _loadable(path: str) -> str | bytes:
    """The model at `path` as cimc reads it, in an IR version onnxruntime knows.

    A model saved by a newer onnx package declares an IR version onnxruntime
    may not know yet, although it uses nothing beyond its opsets: it is lowered
    to what the opsets need. A graph input that has an initializer (every
    initializer is one below IR version 4) is that constant to cimc's import;
    left an input, onnxruntime's optimizer may merge equal initializers and then
    ask for the input in every calibration feed.
    """
    import onnx

    from cimc.frontend.importer import convert_opset

    model = onnx.load(path, load_external_data=False)
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    initializers = {init.name for init in model.graph.initializer}
    constant_inputs = any(i.name in initializers for i in model.graph.input)
    # The quantizer writes per-channel DequantizeLinear, which needs opset 13: an older
    # model is converted first, as import-onnx converts it.
    old = any(o.domain in ("", "ai.onnx") and o.version < PER_CHANNEL_OPSET
              for o in model.opset_import)
    sums = any(node.op_type == "Sum" and len(node.input) > 1 for node in model.graph.node)
    if model.ir_version <= needed and not constant_inputs and not old \
            and not _scalar_gemm_biases(model) and not sums:
        return path
    model = onnx.load(path)
    _widen_gemm_biases(model)
    _sums_to_adds(model)
    if constant_inputs:
        inputs = [i for i in model.graph.input if i.name not in initializers]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    # Initializers stop being inputs at IR version 4.
    model.ir_version = max(needed, 4) if model.ir_version < 4 else min(model.ir_version, needed)
    if old:
        model = convert_opset(model, path)
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import),
                                                     ignore_unknown=True)
        model.ir_version = min(max(model.ir_version, 4), needed)
    return model.SerializeToString()


def _sums_to_adds(model: onnx.ModelProto) -> None:
    """Each Sum of n > 1 inputs (older exporters' residual adds, as in the onnx package's
    ResNet-50) as n - 1 Adds, which onnxruntime's quantizer quantizes and Sum it does
    not (the Sum would stay float between integer layers)."""
    import onnx

    nodes = []
    for node in model.graph.node:
        if node.op_type != "Sum" or len(node.input) < 2:
            nodes.append(node)
            continue
        total = node.input[0]
        for k, addend in enumerate(node.input[1:], start=1):
            last = k == len(node.input) - 1
            out = node.output[0] if last else f"{node.output[0]}_partial{k}"
            nodes.append(onnx.helper.make_node("Add", [total, addend], [out],
                                               name=node.name if last else f"{node.name}_{k}"))
            total = out
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _scalar_gemm_biases(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int]]:
    """Gemm nodes whose constant bias C is one number or one row [1,N] broadcast over the
    N columns, with N (onnxruntime's quantizer fails on them: "array is 0-dimensional",
    "truth value of an array ... is ambiguous")."""
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in shapes \
                or node.input[1] not in shapes or len(shapes[node.input[1]]) != 2:
            continue
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        n = shapes[node.input[1]][0 if trans_b else 1]
        bias = shapes[node.input[2]]
        if bias != [n] and (int(np.prod(bias)) == 1 or bias == [1, n]):
            found.append((node, n))
    return found


def _widen_gemm_biases(model: onnx.ModelProto) -> None:
    """Give each Gemm of `_scalar_gemm_biases` its own bias of shape [N]."""
    from onnx import numpy_helper

    values = {init.name: init for init in model.graph.initializer}
    for node, n in _scalar_gemm_biases(model):
        bias = numpy_helper.to_array(values[node.input[2]])
        name = f"{node.input[2]}_{node.name or 'gemm'}_columns"
        columns = np.broadcast_to(bias.reshape(-1), (n,)).copy()
        model.graph.initializer.append(numpy_helper.from_array(columns, name))
        node.input[2] = name


def quantize_onnx(
    path: str,
    output: str | Path,
    inputs: dict[str, TensorType],
    calibration: dict[str, np.ndarray] | None,
    activations: str = "int8",
) -> None:
    """Write the QDQ quantization of the float model at `path` to `output`.

    `inputs` are the model's input types (as imported); `calibration` maps each
    input to one or more batches stacked on axis 0. Without calibration data
    the ranges come from seeded random inputs, and a warning says so.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if activations not in ACTIVATIONS:
        raise CimcError(f"activations must be one of {', '.join(ACTIVATIONS)}, not {activations!r}")
    if calibration is None:
        warn(
            f"{path}: no calibration data (--calibrate); quantizing with ranges from random "
            "inputs, so the accuracy of the quantized model is not meaningful"
        )
    feeds = _samples(calibration or random_calibration(inputs), inputs)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    import onnxruntime

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice goes to the root logger
    # Its sessions' notes and errors go to onnxruntime's log: only fatal ones are shown, as
    # a failure is reported below as one CimcError (the log line would say it twice).
    onnxruntime.set_default_logger_severity(4)
    try:
        with tempfile.TemporaryDirectory(prefix="cimc-quantize-") as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            _prepare(path, prepared)
            quantize_static(
                str(prepared),
                str(output),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    except CimcError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise CimcError(
            f"{path}: onnxruntime could not quantize the model: {text[0] if text else exc!r}"
        ) from None
    finally:
        logging.getLogger().setLevel(level)
        onnxruntime.set_default_logger_severity(2)


def import_model(
    path: str,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    calibrate: str | Path | np.ndarray | dict[str, np.ndarray] | None = None,
    activations: str = "int8",
    *,
    keep_float: bool = False,
    target: Target | None = None,
) -> Module:
    """Import `path` as the integer IR's starting point (before the frontend passes).

    A QDQ model comes in as it is. A float model is quantized first: with the
    data in `calibrate`, or, unless `keep_float` (float semantics on the
    reference engine), on seeded random inputs with a warning — good enough for
    mapping and timing studies of the structure-only model-zoo graphs.

    Given a `target`, a model whose weights cannot fit its crossbars is refused
    right after import, from the weights' shapes, before any quantization.
    """
    from cimc.frontend.importer import import_onnx
    from cimc.tensor_io import check_inputs, named_arrays, read_inputs

    module = import_onnx(path, input_shapes, target=target)
    if is_quantized(module):
        if calibrate is not None:
            raise CimcError(f"{path}: the model is already quantized; drop --calibrate")
        return module
    if calibrate is None and keep_float:
        return module
    inputs = {name: module.values[name] for name in module.inputs}
    del module  # its float weights (100 MB for ResNet-50) are not needed while quantizing
    if calibrate is None:
        data = None
    elif isinstance(calibrate, (str, Path)):
        data = read_inputs(str(calibrate), inputs)
    else:  # arrays in memory (cimc.compile(..., calibrate=images))
        data = check_inputs("calibrate", named_arrays("calibrate", calibrate, list(inputs)),
                            inputs)
    with tempfile.TemporaryDirectory(prefix="cimc-import-") as tmp:
        quantized = Path(tmp) / Path(path).name
        quantize_onnx(path, quantized, inputs, data, activations)
        try:
            return import_onnx(str(quantized), input_shapes)
        except CimcError as exc:  # name the user's model, not the temporary file
            raise CimcError(exc.message.replace(str(quantized), f"{path} (quantized)"),
                            exc.location, exc.source_line) from None
