"""import-onnx: read an ONNX model into the tensor IR.

The steps, in order: load and check the model, set its large weights aside as
numpy arrays (held once, in their own dtype: int8 weights stay int8), pin
dynamic input dimensions (`--input-shape NAME=1,3,224,224`), convert to one
canonical opset, infer shapes, let onnx-graphsurgeon fold constants (shape
computations, the ConstantOfShape weights of structure-only graphs) and drop
dead nodes, then build one IR op per ONNX node with the conversion table of
cimc/frontend/ops.py (float ops) and cimc/frontend/quant.py (QDQ and
QLinear/Integer ops).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from cimc.diagnostics import CimcError
from cimc.frontend.build import SUPPORTED_TYPES, ModuleBuilder
from cimc.frontend.capacity import check_capacity
from cimc.frontend.movement import MOVEMENT_CONVERTERS
from cimc.frontend.ops import CONVERTERS
from cimc.frontend.quant import QUANT_CONVERTERS, record_quants
from cimc.frontend.recurrent import RECURRENT_CONVERTERS
from cimc.frontend.signal import lift_1d
from cimc.ir.module import Module
from cimc.ir.verifier import VerifyError, verify

if TYPE_CHECKING:
    from cimc.targets import Target

# Every model is converted to this opset before conversion, so the converters
# see one spelling of each op (QuantizeLinear/DequantizeLinear per-axis needs >= 13).
CANONICAL_OPSET = 18

# Element types of fewer than 8 bits, or 8-bit floats: stored packed, no numpy type.
PACKED_TYPES = frozenset(getattr(onnx.TensorProto, name) for name in (
    "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "UINT4",
    "INT4", "FLOAT4E2M1", "UINT2", "INT2", "FLOAT6E2M3", "FLOAT6E3M2")
    if hasattr(onnx.TensorProto, name))

# Nodes graphsurgeon must not constant-fold: folding them would turn integer
# weights and their quantization into plain float constants.
KEEP_UNFOLDED = frozenset(
    {"DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)

# Constants with more elements than this bypass the ONNX protobuf after folding.
LARGE_CONSTANT = 4096


def import_onnx(path: str, input_shapes: dict[str, tuple[int, ...]] | None = None,
                verify: bool = True, target: Target | None = None) -> Module:
    """Load the ONNX model at `path` and return it as an IR Module.

    The module is verified (unless `verify` is false), so that a node the
    checker and shape inference let through but that does not fit its operands
    is reported against the model's node, not as invalid IR later. Given a
    `target`, weights too big for its crossbars are refused first (cimc/frontend/capacity.py).
    """
    model = load_model(path, target)
    aside = set_weights_aside(model, path)
    name_nodes(model)
    pin_input_shapes(model, path, input_shapes or {}, aside)
    model = convert_opset(model, path)
    model = infer_shapes(model, path)
    if lift_1d(model, path, aside):  # 1-D signals as images of one row
        model = infer_shapes(model, path)
    model, weights = fold_constants(model, path, aside)
    model = infer_shapes(model, path)
    module = ModuleBuilder(model, path, module_name(path), weights).build(
        {**CONVERTERS, **MOVEMENT_CONVERTERS, **QUANT_CONVERTERS, **RECURRENT_CONVERTERS},
        record_quants)
    if verify:
        verify_import(module, model, path)
    return module


def verify_import(module: Module, model: onnx.ModelProto, path: str) -> None:
    """Verify the module imported from `model`; a failure names the file and the node."""
    try:
        verify(module)
    except VerifyError as exc:
        message = exc.message
        # The op of that name, or one the node was expanded into (named after it).
        nodes = [n for n in model.graph.node if exc.op and n.name and exc.op.startswith(n.name)]
        node = max(nodes, key=lambda n: len(n.name), default=None)
        if node is not None and message.startswith(f"op '{exc.op}' ("):
            rest = message[message.index("):") + 1:]
            part = "" if node.name == exc.op else f", in its op {exc.op!r}"
            message = f"node {node.name!r} ({node.op_type}){part}{rest}"
        advice = ("its operands and attributes do not fit together: correct the node in the "
                  "model" if exc.op else "correct this tensor in the model")
        raise CimcError(f"{path}: {message}; {advice}") from None


def load_model(path: str, target: Target | None = None) -> onnx.ModelProto:
    """Read and check the model file (first, whether its weights fit `target`); errors
    name the file."""
    if Path(path).is_dir():
        raise CimcError(f"{path}: is a directory; give the path of an ONNX model (.onnx)")
    if not Path(path).is_file():
        raise CimcError(f"{path}: no such file; give the path of an ONNX model (.onnx)")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf raises its own DecodeError, among others
        raise CimcError(
            f"{path}: not a valid ONNX model (it could not be parsed: {_first_line(exc)}); "
            "check that the file is complete and really an .onnx file"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise CimcError(f"{path}: not a valid ONNX model (it holds no graph)")
    if target is not None:  # seconds, where checking and importing a huge model take minutes
        check_capacity(model, target, path)
    try:
        # The file, not `model`: serializing a model of 25 M weights for the checker took
        # longer than the checker itself.
        onnx.checker.check_model(path)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise CimcError(
            f"{path}: the ONNX checker rejects this model: {_one_line(exc)}"
        ) from None
    if not model.graph.output:
        last = model.graph.node[-1].output[0] if model.graph.node[-1].output else ""
        example = f" (such as {last!r})" if last else ""
        raise CimcError(f"{path}: the model has no outputs, so it computes nothing; list its "
                        f"result tensors{example} in the graph's outputs when exporting it")
    names = [out.name for out in model.graph.output]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:  # the checker lets it pass; outputs are keyed by name downstream
        raise CimcError(f"{path}: output {twice!r} is listed {names.count(twice)} times in the "
                        "graph's outputs; list each result once")
    return model


def set_weights_aside(model: onnx.ModelProto, path: str) -> dict[str, np.ndarray[Any, Any]]:
    """The initializers of more than LARGE_CONSTANT elements taken out of the checked
    `model` as arrays, each declared a typed graph input in its place: converting the
    opset and inferring shapes serialize the model and parse it back, which for
    ResNet-50's 25 M weights took more time than all the rest (fold_constants takes
    them back)."""
    from onnx import numpy_helper

    inputs = {value.name for value in model.graph.input}
    aside: dict[str, np.ndarray[Any, Any]] = {}
    kept = []
    for init in model.graph.initializer:
        if np.prod(init.dims, dtype=np.int64) <= LARGE_CONSTANT or init.name in aside:
            kept.append(init)
            continue
        try:
            aside[init.name] = numpy_helper.to_array(init, base_dir=str(Path(path).parent))
        except Exception as exc:
            raise CimcError(f"{path}: initializer {init.name!r} cannot be read: "
                            f"{_first_line(exc)}; check the model's weights") from None
        if init.name not in inputs:  # IR version 3 lists initializers as inputs already
            model.graph.input.append(onnx.helper.make_tensor_value_info(
                init.name, init.data_type, list(init.dims)))
    if aside:
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return aside


def pin_input_shapes(
    model: onnx.ModelProto, path: str, input_shapes: dict[str, tuple[int, ...]],
    aside: Iterable[str] = (),
) -> None:
    """Set the dimensions given by --input-shape and insist that none stay dynamic
    (initializers, and those `aside`, are no inputs)."""
    initializers = {init.name for init in model.graph.initializer} | set(aside)
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in graph_inputs]
    if not graph_inputs and model.graph.input:
        # An initializer is the input's value: the whole graph would be one constant.
        raise CimcError(
            f"{path}: the model has no inputs: input {model.graph.input[0].name!r} has an "
            "initializer of the same name, which makes it a constant; remove that "
            "initializer so that the input is read"
        )
    for name in input_shapes:
        if name not in names:
            raise CimcError(
                f"{path}: --input-shape names {name!r}, which is not an input of the model; "
                f"its inputs are: {', '.join(names)}"
            )
    for value in graph_inputs:
        dims = value.type.tensor_type.shape.dim
        given = input_shapes.get(value.name)
        if given is not None:
            if len(dims) and len(dims) != len(given):
                raise CimcError(
                    f"{path}: --input-shape {value.name}={_dims_text(given)} has {len(given)} "
                    f"dimensions but input {value.name!r} has {len(dims)}"
                )
            for i, (dim, size) in enumerate(zip(dims, given, strict=False)):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise CimcError(
                        f"{path}: --input-shape {value.name}={_dims_text(given)} sets dimension "
                        f"{i} to {size} but the model fixes it to {dim.dim_value}"
                    )
            value.type.tensor_type.shape.Clear()
            for size in given:
                value.type.tensor_type.shape.dim.add().dim_value = int(size)
            continue
        if not value.type.tensor_type.HasField("shape"):
            raise CimcError(
                f"{path}: input {value.name!r} has no declared shape; "
                f"give it with --input-shape {value.name}=..."
            )
        for i, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value == 0:
                raise CimcError(
                    f"{path}: input {value.name!r} has dimension {i} of size 0 (an empty "
                    f"tensor); fix it with --input-shape {value.name}=..."
                )
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                label = f"{dim.dim_param!r}" if dim.dim_param else "unknown"
                known = ",".join(str(d.dim_value) if d.dim_value > 0 else "?" for d in dims)
                raise CimcError(
                    f"{path}: input {value.name!r} has a dynamic dimension {i} ({label}) in "
                    f"shape [{known}]; fix it with --input-shape {value.name}=..."
                    " (for example the batch size 1)"
                )
    # Shapes recorded by the exporter may contradict the pinned ones; re-infer them all.
    del model.graph.value_info[:]
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.ClearField("shape")


def convert_opset(model: onnx.ModelProto, path: str) -> onnx.ModelProto:
    """Bring the default-domain opset to CANONICAL_OPSET (newer models are kept as they are)."""
    version = next(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), CANONICAL_OPSET
    )
    if version >= CANONICAL_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, CANONICAL_OPSET)
    except Exception as exc:
        raise CimcError(
            f"{path}: cannot convert the model from opset {version} to opset {CANONICAL_OPSET}: "
            f"{_first_line(exc)}; re-export it at opset {CANONICAL_OPSET}"
        ) from None


def infer_shapes(model: onnx.ModelProto, path: str) -> onnx.ModelProto:
    """Run ONNX shape inference strictly; its complaint names the node."""
    try:
        return onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except Exception as exc:
        raise CimcError(f"{path}: shape inference failed: {_first_line(exc)}") from None


def fold_constants(
    model: onnx.ModelProto, path: str, aside: dict[str, np.ndarray[Any, Any]] | None = None,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray[Any, Any]]]:
    """Fold constant subgraphs and remove dead nodes with onnx-graphsurgeon; the
    initializers set `aside` (declared as graph inputs) are constants again first.

    Large constants come back as numpy arrays beside a model that declares
    them as typed graph inputs: serializing them only to parse them back would
    dominate the import time of big models.
    """
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.logger import G_LOGGER

    G_LOGGER.severity = G_LOGGER.ERROR
    aside = aside or {}
    for init in model.graph.initializer:
        if init.data_type in PACKED_TYPES:  # folding cannot even read them
            type_name = onnx.TensorProto.DataType.Name(init.data_type).lower()
            raise CimcError(f"{path}: constant {init.name!r} has element type {type_name}, "
                            f"which cimc does not support ({SUPPORTED_TYPES}); convert the "
                            "model to float32, or quantize it to 8 bits")
    # graphsurgeon runs onnxruntime only on nodes it can fold; without any (a QDQ model
    # from onnxruntime's quantizer) onnxruntime is not even imported (50 ms, 20 MB) nor
    # graphsurgeon's folding run (150 ms for ResNet-50, to fold nothing).
    fold, run = _folding(model, set(aside))
    onnxruntime = importlib.import_module("onnxruntime") if run else None
    if onnxruntime is not None:
        # The folding sessions' optimizer is chatty, and a node onnxruntime cannot run is
        # left unfolded for the checks after this step: its error log is not the user's.
        onnxruntime.set_default_logger_severity(4)
    try:
        graph = gs.import_onnx(model)
        tensors = graph.tensors()
        for name, values in aside.items():
            tensors[name].to_constant(values)
        graph.inputs = [t for t in graph.inputs if t.name not in aside]
        graph.cleanup().toposort()
        if fold:
            graph.fold_constants(should_exclude_node=lambda node: node.op in KEEP_UNFOLDED)
            graph.cleanup().toposort()
        weights: dict[str, np.ndarray[Any, Any]] = {}
        stand_ins: dict[str, gs.Variable] = {}
        for node in graph.nodes:
            for i, tensor in enumerate(node.inputs):
                if isinstance(tensor, gs.Constant) and tensor.values.size > LARGE_CONSTANT:
                    weights[tensor.name] = tensor.values
                    if tensor.name not in stand_ins:
                        stand_ins[tensor.name] = gs.Variable(
                            tensor.name, tensor.values.dtype, tensor.values.shape
                        )
                    node.inputs[i] = stand_ins[tensor.name]
        graph.inputs.extend(stand_ins.values())
        folded = gs.export_onnx(graph, do_type_check=False)
    except Exception as exc:
        raise CimcError(f"{path}: constant folding failed: {_first_line(exc)}") from None
    finally:
        if onnxruntime is not None:
            onnxruntime.set_default_logger_severity(2)
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    return folded, weights


def _folding(model: onnx.ModelProto, aside: set[str]) -> tuple[bool, bool]:
    """Whether graphsurgeon has anything to fold in `model` (Constant nodes to make
    constants, or foldable nodes), and whether onnxruntime may run for it (a foldable
    node: one whose inputs are all constant, a Shape or Size, or one with subgraphs).
    `aside` names constant inputs."""
    constant = {init.name for init in model.graph.initializer} | aside | {""}
    constant_nodes = False
    for node in model.graph.node:  # in topological order (the checker insists)
        if node.op_type == "Constant":
            constant.update(node.output)
            constant_nodes = True
        elif node.op_type in ("Shape", "Size") or any(a.g.node or a.graphs for a in
                                                      node.attribute) or (
                node.op_type not in KEEP_UNFOLDED and set(node.input) <= constant):
            return True, True
    return constant_nodes, False


def name_nodes(model: onnx.ModelProto) -> None:
    """Name unnamed nodes after their op type (Conv_0, Conv_1, ...): IR ops carry node names."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if not node.name:
            node.name = f"{node.op_type}_{counts.get(node.op_type, 0)}"
            counts[node.op_type] = counts.get(node.op_type, 0) + 1


def module_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem) or "main"


def _dims_text(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """The whole message of `exc` on one line (the checker spreads one sentence over several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
