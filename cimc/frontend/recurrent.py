"""The conversion table's recurrent layers: ONNX LSTM, GRU and RNN.

Each becomes one IR op with every optional operand present, so that the
reference, and the passes after it, never ask which are missing: a missing
bias or initial state is a zero constant, a missing peephole vector (LSTM) a
zero one, and `sequence_lens` is dropped when every sequence runs the whole
time axis (the only case supported). Every result is defined; the ones the
node leaves unnamed get fresh names nobody reads. The activations must be
ONNX's defaults (sigmoid gates, tanh cell and hidden state), which is what
torch exports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cimc.frontend.build import Converter, NodeImport
from cimc.ir.module import TensorType
from cimc.ir.shapes import RECURRENT_DIRECTIONS, recurrent_results

# kind -> (ONNX op, gates, default activations, results).
LAYERS: dict[str, tuple[str, int, list[str], int]] = {
    "lstm": ("LSTM", 4, ["Sigmoid", "Tanh", "Tanh"], 3),
    "gru": ("GRU", 3, ["Sigmoid", "Tanh"], 2),
    "rnn": ("RNN", 1, ["Tanh"], 2),
}


def _attributes(ctx: NodeImport, kind: str) -> dict[str, Any]:
    direction = ctx.attrs.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction not in RECURRENT_DIRECTIONS:
        raise ctx.error(f"direction {direction!r} is not one of "
                        f"{', '.join(RECURRENT_DIRECTIONS)}")
    defaults = LAYERS[kind][2]
    activations = [a.decode() if isinstance(a, bytes) else a
                   for a in ctx.attrs.get("activations", [])]
    if activations and [a.lower() for a in activations] != \
            [a.lower() for a in defaults * RECURRENT_DIRECTIONS[direction]]:
        raise ctx.error(f"activations {activations} are not supported; only ONNX's defaults "
                        f"({', '.join(defaults)} per direction), as torch exports them")
    if ctx.attrs.get("input_forget", 0):
        raise ctx.error("input_forget=1 (the forget gate coupled to the input gate) is not "
                        "supported")
    attrs: dict[str, Any] = {"hidden_size": int(ctx.attrs["hidden_size"]),
                             "direction": direction, "layout": int(ctx.attrs.get("layout", 0))}
    if "clip" in ctx.attrs:
        attrs["clip"] = float(ctx.attrs["clip"])
    if kind == "gru":
        attrs["linear_before_reset"] = int(ctx.attrs.get("linear_before_reset", 0))
    return attrs


def _zeros(ctx: NodeImport, what: str, shape: tuple[int, ...]) -> str:
    name = ctx.fresh(what)
    ctx.builder.module.add_constant(name, np.zeros(shape, np.float32))
    return name


def _check_lengths(ctx: NodeImport, steps: int) -> None:
    """sequence_lens may only say that every sequence is `steps` long."""
    if not ctx.has_input(4):
        return
    lengths = ctx.constant(4, "sequence lengths").reshape(-1)
    if (lengths != steps).any():
        raise ctx.error(f"sequence_lens {lengths.tolist()} differ from the time axis "
                        f"({steps}); only sequences of the whole length are supported")


def recurrent(kind: str) -> Converter:
    """The converter of ONNX op LAYERS[kind][0]."""
    gates, results = LAYERS[kind][1], LAYERS[kind][3]

    def convert(ctx: NodeImport) -> None:
        x = ctx.type(0)
        if x.dtype != "f32" or any(ctx.type(i).dtype != "f32" for i in (1, 2)):
            raise ctx.error(f"{ctx.op_type} computes on f32 tensors, not "
                            f"{x.dtype}; onnxruntime's quantizer leaves it float")
        attrs = _attributes(ctx, kind)
        y_shape, state = recurrent_results(x.shape, attrs)
        layout = attrs["layout"]
        dirs, hidden = (state[1] if layout else state[0]), attrs["hidden_size"]
        _check_lengths(ctx, x.shape[1 if layout else 0])
        operands = [ctx.operand(0), ctx.operand(1), ctx.operand(2)]
        operands.append(ctx.operand(3) if ctx.has_input(3) else
                        _zeros(ctx, "B", (dirs, 2 * gates * hidden)))
        for index, what in ((5, "initial_h"), (6, "initial_c"))[:results - 1]:
            operands.append(ctx.operand(index) if ctx.has_input(index) else
                            _zeros(ctx, what, state))
        if kind == "lstm":
            operands.append(ctx.operand(7) if ctx.has_input(7) else
                            _zeros(ctx, "P", (dirs, 3 * hidden)))
        outputs, types = [], []
        for index in range(results):
            named = index < len(ctx.node.output) and ctx.node.output[index]
            outputs.append(ctx.node.output[index] if named else ctx.fresh(f"Y{index}"))
            types.append(ctx.result_type(index) if named else
                         TensorType(y_shape if index == 0 else state, "f32"))
        ctx.builder.module.add_op(kind, operands, types, name=ctx.name, outputs=outputs,
                                  attrs=attrs)

    return convert


RECURRENT_CONVERTERS: dict[str, Converter] = {
    "GRU": recurrent("gru"),
    "LSTM": recurrent("lstm"),
    "RNN": recurrent("rnn"),
}
