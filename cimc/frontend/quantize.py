"""Post-training quantization of a float ONNX model with onnxruntime.

The model is pre-processed (constant and batch-norm folding; a Sum as Adds, a batch
norm with no conv to fold into as a depthwise 1x1 conv, and the folding again, so
that no float op is left between integer layers) and quantized by
`onnxruntime.quantization.quantize_static` in QDQ format: int8 weights per
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
from cimc.frontend.recurrent_quant import float_recurrent, quantize_recurrent
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


def _lone_batch_norms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """BatchNormalization nodes with constant parameters that do not follow a Conv read by
    nothing else (which the quantizer's pre-processing folds them into): after a concat
    or a pool, as in DenseNet and Inception-v2, the quantizer would leave them float
    between integer layers."""
    constants = {init.name for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    found = []
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or len(node.output) != 1 \
                or not all(name in constants for name in node.input[1:5]):
            continue
        source = producer.get(node.input[0])
        if source is not None and source.op_type == "Conv" and readers[node.input[0]] == 1:
            continue
        found.append(node)
    return found


def _batch_norms_to_convs(path: Path) -> bool:
    """Each lone batch norm of an image ([N,C,H,W]) in the prepared model at `path` (its
    constants folded) as the depthwise 1x1 Conv it equals, weight scale / sqrt(var +
    epsilon) and bias B - mean x that weight per channel, which the quantizer quantizes
    like any conv (float64 arithmetic, stored float32); the file is rewritten. Whether
    one was."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    lone = _lone_batch_norms(model)
    if not lone:
        return False
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in [*onnx.shape_inference.infer_shapes(model).graph.value_info,
                       *model.graph.input]}
    values = {init.name: init for init in model.graph.initializer}
    changed = False
    for node in lone:
        if ranks.get(node.input[0]) != 4:
            continue  # left to the quantizer as it is
        changed = True
        scale, bias, mean, var = (numpy_helper.to_array(values[name]).astype(np.float64)
                                  for name in node.input[1:5])
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        weight = scale / np.sqrt(var + epsilon)
        names = [f"{node.output[0]}_bn_weight", f"{node.output[0]}_bn_bias"]
        model.graph.initializer.extend([
            numpy_helper.from_array(weight.astype(np.float32).reshape(-1, 1, 1, 1), names[0]),
            numpy_helper.from_array((bias - mean * weight).astype(np.float32), names[1])])
        conv = onnx.helper.make_node("Conv", [node.input[0], *names], list(node.output),
                                     name=node.name or node.output[0], group=len(weight),
                                     kernel_shape=[1, 1])
        del node.attribute[:]
        node.CopyFrom(conv)
    if changed:
        onnx.save(model, path)
    return changed


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
    # The file's own input shapes: the module may read a 1-D signal [N, C, L] as
    # [N, C, 1, L] (cimc/frontend/signal.py), the same elements.
    import onnx

    declared = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
                for value in onnx.load(path, load_external_data=False).graph.input}

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(feeds, None)
            if feed is None:
                return None
            return {name: array.reshape(declared[name]) if all(declared.get(name, [0]))
                    and int(np.prod(declared[name])) == array.size else array
                    for name, array in feed.items()}

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
            if _batch_norms_to_convs(prepared):
                # The optimizations again: a per-channel Mul or Add after such a conv (a
                # Caffe Scale layer) folds into it.
                again = Path(tmp) / "prepared-again.onnx"
                _prepare(str(prepared), again)
                prepared = again
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

    A QDQ model comes in as it is, but for the LSTM and GRU layers onnxruntime's
    quantizer leaves float, which `calibrate` quantizes
    (cimc/frontend/recurrent_quant.py). A float model is quantized first: with the
    data in `calibrate`, or, unless `keep_float` (float semantics on the
    reference engine), on seeded random inputs with a warning — good enough for
    mapping and timing studies of the structure-only model-zoo graphs; its
    recurrent layers are then calibrated on the same data.

    Given a `target`, a model whose weights cannot fit its crossbars is refused
    right after import, from the weights' shapes, before any quantization.
    """
    from cimc.frontend.importer import import_onnx

    module = import_onnx(path, input_shapes, target=target)
    inputs = {name: module.values[name] for name in module.inputs}
    if is_quantized(module):
        # onnxruntime leaves LSTM and GRU float: only they may still want calibration.
        if calibrate is not None and not float_recurrent(module):
            raise CimcError(f"{path}: the model is already quantized; drop --calibrate")
        if calibrate is not None:
            quantize_recurrent(module, _calibration(calibrate, inputs))
        return module
    if calibrate is None and keep_float:
        return module
    del module  # its float weights (100 MB for ResNet-50) are not needed while quantizing
    data = None if calibrate is None else _calibration(calibrate, inputs)
    with tempfile.TemporaryDirectory(prefix="cimc-import-") as tmp:
        quantized = Path(tmp) / Path(path).name
        quantize_onnx(path, quantized, inputs, data, activations)
        try:
            module = import_onnx(str(quantized), input_shapes)
        except CimcError as exc:  # name the user's model, not the temporary file
            raise CimcError(exc.message.replace(str(quantized), f"{path} (quantized)"),
                            exc.location, exc.source_line) from None
    if float_recurrent(module):  # calibrated as onnxruntime calibrated the rest
        quantize_recurrent(module, data if data is not None else random_calibration(inputs))
    return module


def _calibration(calibrate: str | Path | np.ndarray | dict[str, np.ndarray],
                 inputs: dict[str, TensorType]) -> dict[str, np.ndarray]:
    """The calibration inputs by input name, stacked on axis 0 (a file or arrays)."""
    from cimc.tensor_io import check_inputs, named_arrays, read_inputs

    if isinstance(calibrate, (str, Path)):
        return read_inputs(str(calibrate), inputs)
    # arrays in memory (cimc.compile(..., calibrate=images))
    return check_inputs("calibrate", named_arrays("calibrate", calibrate, list(inputs)), inputs)
