"""Quantizing the recurrent layers onnxruntime leaves float (docs/ir.md, "Quantized
recurrent layers").

onnxruntime's `quantize_static` has no QDQ quantizer for LSTM and GRU: their
weights, inputs and results stay float. `quantize_recurrent` calibrates each
float lstm and gru on sample inputs (the float reference run, the range of every
intermediate of every step recorded by the float step functions) and rewrites it
as quantized ops of one direction each: the input quantized per tensor
(symmetric int8), W and R int8 per output channel (symmetric, as quantize_static
quantizes a Gemm's weights), the biases int32 in their accumulators' scales, the
states and every intermediate int8 with scale max|v| / 127; a bidirectional layer
becomes a forward and a reverse op whose results are concatenated. Every result
is dequantized for the float ops that read it, so the module computes what it
did, within the quantization error this module exists to measure.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op, Quant, TensorType
from cimc.reference import run_module
from cimc.reference.recurrent import SCALE_NAMES, gru_direction, lstm_direction
from cimc.reference.requant import saturate

# Below this a range is taken as empty (a dead unit): its scale stays finite.
SMALLEST_RANGE = 2.0**-20


class Ranges:
    """The largest magnitude of each named quantity seen (an Observer)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def __call__(self, name: str, value: np.ndarray) -> None:
        self.seen[name] = max(self.seen.get(name, 0.0), float(np.abs(value).max(initial=0.0)))

    def scale(self, name: str) -> float:
        return _scale(self.seen.get(name, 0.0))


def float_recurrent(module: Module) -> list[Op]:
    """The float lstm and gru ops of `module`."""
    return [op for op in module.ops() if op.kind in SCALE_NAMES
            and not module.values[op.outputs[0]].is_quantized]


def why_float(module: Module, op: Op) -> str | None:
    """Why `op` (a float lstm or gru) has no quantized form, or None."""
    if op.attrs.get("layout", 0):
        return "layout 1 (batch first) is quantized only in layout 0, as torch exports it"
    if "clip" in op.attrs:
        return "a clipped recurrent layer has no integer semantics"
    if op.kind == "gru" and not op.attrs.get("linear_before_reset", 0):
        return "a quantized gru needs linear_before_reset=1 (torch's GRU)"
    if op.kind == "lstm" and (op.inputs[6] not in module.constants
                              or module.constants[op.inputs[6]].any()):
        return "peepholes have no integer semantics"
    for value in op.inputs[1:]:
        if value not in module.constants:
            return f"operand {value!r} is computed at run time, not a constant"
    return None


def quantize_recurrent(module: Module, samples: Mapping[str, np.ndarray]) -> list[str]:
    """Quantize every float lstm and gru of `module` that has an integer form, calibrated
    on `samples` (input name -> inputs stacked on axis 0); the names of those rewritten."""
    ops = [op for op in float_recurrent(module) if why_float(module, op) is None]
    if not ops:
        return []
    inputs = _captured_inputs(module, ops, samples)
    for op in ops:
        _rewrite(module, op, inputs[op.inputs[0]])
    module.remove_dead()
    return [op.name for op in ops]


def _captured_inputs(module: Module, ops: list[Op], samples: Mapping[str, np.ndarray]
                     ) -> dict[str, list[np.ndarray]]:
    """The float input x of each op in each sample's run (one run per sample: x has time,
    not samples, on axis 0)."""
    wanted = sorted({op.inputs[0] for op in ops})
    counts = {module.values[name].shape[0] for name in module.inputs}
    batch = counts.pop() if len(counts) == 1 else 1
    total = min(len(np.asarray(samples[name])) for name in module.inputs) // max(batch, 1)
    if total < 1:
        raise CimcError("no calibration sample to quantize the recurrent layers with")
    outputs = module.outputs
    module.outputs = wanted
    try:
        runs = [run_module(module, {name: np.asarray(samples[name])[k * batch:(k + 1) * batch]
                                    for name in module.inputs}) for k in range(total)]
    finally:
        module.outputs = outputs
    return {name: [run[name].astype(np.float64) for run in runs] for name in wanted}


def _scale(magnitude: float) -> float:
    """The symmetric int8 scale of values up to `magnitude`."""
    return max(magnitude, SMALLEST_RANGE) / 127.0


def _per_row(values: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """int8 codes of a weight matrix, symmetric per row (output channel)."""
    scales = np.maximum(np.abs(values).max(axis=-1), SMALLEST_RANGE) / 127.0
    return saturate(np.rint(values / scales[:, None]), "int8"), tuple(float(s) for s in scales)


def _codes(values: np.ndarray, scale: float, dtype: str = "int8") -> np.ndarray:
    return saturate(np.rint(values / scale), dtype)


def _calibrate(op: Op, consts: list[np.ndarray], xs: list[np.ndarray]) -> list[Ranges]:
    """The ranges of every intermediate of each direction of `op` over the inputs `xs`,
    each run from the op's initial states as the float reference runs it."""
    w, r, b, h0 = consts[:4]
    ranges = [Ranges() for _ in range(w.shape[0])]
    for x in xs:
        steps = range(x.shape[0])
        for d, seen in enumerate(ranges):
            order = steps[::-1] if op.attrs["direction"] == "reverse" or d == 1 else steps
            h = np.broadcast_to(h0[d], (x.shape[1], h0.shape[-1])).copy()
            if op.kind == "lstm":
                c = np.broadcast_to(consts[4][d], h.shape).copy()
                lstm_direction(x, w[d], r[d], b[d], h, c, consts[5][d], order, observe=seen)
            else:
                gru_direction(x, w[d], r[d], b[d], h, order, True, observe=seen)
    return ranges


def _rewrite(module: Module, op: Op, xs: list[np.ndarray]) -> None:
    """`op` as one quantized op per direction between a quantize of its input and a
    dequantize of each result (module docstring)."""
    consts = [module.constants[v].astype(np.float64) for v in op.inputs[1:]]
    w, r, b, h0 = consts[:4]
    c0 = consts[4] if op.kind == "lstm" else None
    hidden = int(op.attrs["hidden_size"])
    gates, dirs = w.shape[1] // hidden, w.shape[0]
    ranges = _calibrate(op, consts, xs)
    # Both directions share the state scales, so their results concatenate as they are.
    s_x = _scale(max(float(np.abs(x).max(initial=0.0)) for x in xs))
    s_h = _scale(max([seen.seen.get("hidden", 0.0) for seen in ranges]
                     + [float(np.abs(h0).max(initial=0.0))]))
    s_c = _scale(max([seen.seen.get("cell", 0.0) for seen in ranges]
                     + [0.0 if c0 is None else float(np.abs(c0).max(initial=0.0))]))
    x_type = module.values[op.inputs[0]]
    xq = module.add_op("quantize", [op.inputs[0]],
                       [TensorType(x_type.shape, "i8", Quant((s_x,), (0,)))],
                       name=f"{op.name}.x").outputs[0]
    h_quant, c_quant = Quant((s_h,), (0,)), Quant((s_c,), (0,))
    length, batch = x_type.shape[0], x_type.shape[1]
    types = [TensorType((length, 1, batch, hidden), "i8", h_quant),
             TensorType((1, batch, hidden), "i8", h_quant),
             TensorType((1, batch, hidden), "i8", c_quant)][:len(op.outputs)]
    results: list[list[str]] = [[] for _ in op.outputs]
    for d in range(dirs):
        direction = op.attrs["direction"] if dirs == 1 else ("forward", "reverse")[d]
        name = f"{op.name}.{direction}"  # (the node keeps its name until it goes)

        def constant(what: str, data: np.ndarray, quant: Quant | None = None,
                     base: str = name) -> str:
            return module.add_constant(module.fresh_name(f"{base}.{what}"), data, quant)

        w_codes, w_scales = _per_row(w[d])
        r_codes, r_scales = _per_row(r[d])
        # Each bias half in the scale of the accumulator it joins (docs/ir.md).
        bias = np.concatenate([_codes(b[d, :gates * hidden] / np.array(w_scales), s_x, "int32"),
                               _codes(b[d, gates * hidden:] / np.array(r_scales), s_h, "int32")])
        channels = (0,) * (gates * hidden)
        operands = [xq,
                    constant("W", w_codes[None], Quant(w_scales, channels, axis=1)),
                    constant("R", r_codes[None], Quant(r_scales, channels, axis=1)),
                    constant("B", bias[None]),
                    constant("initial_h", _codes(h0[d:d + 1], s_h), h_quant)]
        if c0 is not None:
            operands += [constant("initial_c", _codes(c0[d:d + 1], s_c), c_quant),
                         constant("P", np.zeros((1, 3 * hidden), np.float32))]
        attrs = {**{k: v for k, v in op.attrs.items() if k != "direction"},
                 "direction": direction,
                 "scales": [ranges[d].scale(n) for n in SCALE_NAMES[op.kind]]}
        part = module.add_op(op.kind, operands, types, name=name, attrs=attrs)
        for index, out in enumerate(part.outputs):
            results[index].append(out)
    for index, (out, parts) in enumerate(zip(op.outputs, results, strict=True)):
        codes = parts[0]
        if len(parts) > 1:
            codes = module.add_op("concat", parts, [_joined(module, parts, index)],
                                  name=f"{op.name}.join{index}",
                                  attrs={"axis": 1 if index == 0 else 0}).outputs[0]
        dequantized = module.add_op("dequantize", [codes], [module.values[out]],
                                    name=f"{op.name}.out{index}").outputs[0]
        module.replace_uses(out, dequantized)
    module.remove_op(op)


def _joined(module: Module, parts: list[str], index: int) -> TensorType:
    """The type of the direction results `parts` concatenated (Y on axis 1, states on 0)."""
    first = module.values[parts[0]]
    axis = 1 if index == 0 else 0
    shape = list(first.shape)
    shape[axis] = sum(module.values[p].shape[axis] for p in parts)
    return first.with_shape(shape)
