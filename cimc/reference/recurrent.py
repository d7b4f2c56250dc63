"""lstm, gru and rnn: ONNX's recurrent layers, one time step after another.

Float semantics are ONNX's (docs/ir.md, "Recurrent layers") with its default
activations (sigmoid for the gates, tanh for the cell and the hidden state), in
float64, rounded to float32 once at the end as the other float kernels do.

A quantized lstm or gru (one direction, layout 0, made by
cimc/frontend/recurrent_quant.py) computes each step with the integer semantics
of ops the chip already has (docs/ir.md, "Quantized recurrent layers"): two
gemms (x·Wᵀ and h·Rᵀ, each requantized to 8 bits), a quantized add per gate,
the gates through 256-entry tables, products of two 8-bit tensors (mul) and
sums (add) for the new cell and hidden state.

Each kernel returns every result of its op: Y, the last h (and the last c).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.reference.call import Call
from cimc.reference.integer import add_multipliers, quant_arrays, rescale
from cimc.reference.requant import rounding_shift, saturate

# Sees each intermediate of a float step by name (calibration records its range).
Observer = Callable[[str, np.ndarray], None]

# The codes of a gate (a sigmoid in [0, 1]) use the whole int8 range; tanh's [-1, 1]
# is symmetric: both fixed, so their tables need no calibration.
GATE_SCALE, GATE_ZERO = 1.0 / 255.0, -128
TANH_SCALE = 1.0 / 127.0
# The calibrated scales of a quantized op's intermediates, in its `scales` attribute.
SCALE_NAMES = {
    "lstm": ("x_gates", "h_gates", "i", "o", "f", "c"),
    "gru": ("x_gates", "h_gates", "z", "r", "r_h", "n"),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ignore(name: str, value: np.ndarray) -> None:
    pass


def _steps(call: Call, direction: int) -> range:
    """The time steps of direction `direction` in the order they run."""
    steps = call.args[0].shape[1 if call.attr("layout", 0) else 0]
    reverse = call.attr("direction") == "reverse" or direction == 1
    return range(steps - 1, -1, -1) if reverse else range(steps)


def _float_args(call: Call) -> list[np.ndarray]:
    """The operands in float64, x and the states in layout 0 ([T,N,D] and [dirs,N,H])."""
    args = [a.astype(np.float64) for a in call.args]
    if call.attr("layout", 0):
        args[0] = args[0].transpose(1, 0, 2)
        for i in range(4, len(args)):
            if args[i].ndim == 3:  # the initial states, not the peepholes
                args[i] = args[i].transpose(1, 0, 2)
    return args


def _state(x: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """An initial state [N,H] for the batch of x [T,N,D] (a run may stack several)."""
    return np.broadcast_to(initial, (x.shape[1], initial.shape[-1])).copy()


def _results(call: Call, ys: list[np.ndarray], *states: list[np.ndarray]
             ) -> tuple[np.ndarray, ...]:
    """Y [T,dirs,N,H] and the states [dirs,N,H] from per-direction lists, in the op's
    layout and float32."""
    y = np.stack(ys, axis=1)
    last = [np.stack(s, axis=0) for s in states]
    if call.attr("layout", 0):
        y = y.transpose(2, 0, 1, 3)
        last = [s.transpose(1, 0, 2) for s in last]
    return tuple(a.astype(np.float32) for a in (y, *last))


def clipper(bound: float | None) -> Callable[[np.ndarray], np.ndarray]:
    if bound is None:
        return lambda pre: pre
    return lambda pre: np.clip(pre, -float(bound), float(bound))


def lstm_direction(x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray,
                   h: np.ndarray, c: np.ndarray, p: np.ndarray, steps: range,
                   clip: float | None = None, observe: Observer = _ignore
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction of a float LSTM over x [T,N,D] from states h, c [N,H]: (Y [T,N,H],
    last h, last c). Gates in ONNX's order i, o, f, c; peepholes i, o, f."""
    hidden = h.shape[-1]
    bound = clipper(clip)
    pi, po, pf = np.split(p, 3)
    y = np.zeros((x.shape[0], *h.shape))
    for t in steps:
        xw, hr = x[t] @ w.T + b[:4 * hidden], h @ r.T + b[4 * hidden:]
        observe("x_gates", xw)
        observe("h_gates", hr)
        gi, go, gf, gc = np.split(xw + hr, 4, axis=-1)
        gi, gf, gc = bound(gi + pi * c), bound(gf + pf * c), bound(gc)
        i, f = _sigmoid(gi), _sigmoid(gf)
        c = f * c + i * np.tanh(gc)
        go = bound(go + po * c)  # the output gate peeps at the new c
        h = _sigmoid(go) * np.tanh(c)
        for name, value in (("i", gi), ("o", go), ("f", gf), ("c", gc), ("cell", c),
                            ("hidden", h)):
            observe(name, value)
        y[t] = h
    return y, h, c


def gru_direction(x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray,
                  h: np.ndarray, steps: range, before_reset: bool,
                  clip: float | None = None, observe: Observer = _ignore
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One direction of a float GRU: (Y [T,N,H], last h). Gates in ONNX's order z, r, h;
    `before_reset` (torch's GRU) applies r after R's product rather than before it."""
    hidden = h.shape[-1]
    bound = clipper(clip)
    wb, rb = b[:3 * hidden], b[3 * hidden:]
    y = np.zeros((x.shape[0], *h.shape))
    for t in steps:
        xw, hr = x[t] @ w.T + wb, h @ r.T + rb
        observe("x_gates", xw)
        observe("h_gates", hr)
        gz = bound(xw[:, :hidden] + hr[:, :hidden])
        gr = bound(xw[:, hidden:2 * hidden] + hr[:, hidden:2 * hidden])
        z, reset = _sigmoid(gz), _sigmoid(gr)
        if before_reset:
            recurrent = reset * hr[:, 2 * hidden:]
        else:
            recurrent = (reset * h) @ r[2 * hidden:].T + rb[2 * hidden:]
        gn = bound(xw[:, 2 * hidden:] + recurrent)
        h = (1.0 - z) * np.tanh(gn) + z * h
        for name, value in (("z", gz), ("r", gr), ("r_h", recurrent), ("n", gn),
                            ("hidden", h)):
            observe(name, value)
        y[t] = h
    return y, h


def lstm(call: Call) -> tuple[np.ndarray, ...]:
    if call.quantized:
        return lstm_codes(call)
    x, w, r, b, h0, c0, p = _float_args(call)
    ys, hs, cs = [], [], []
    for d in range(w.shape[0]):
        y, h, c = lstm_direction(x, w[d], r[d], b[d], _state(x, h0[d]), _state(x, c0[d]),
                                 p[d], _steps(call, d), call.attr("clip"))
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return _results(call, ys, hs, cs)


def gru(call: Call) -> tuple[np.ndarray, ...]:
    if call.quantized:
        return gru_codes(call)
    x, w, r, b, h0 = _float_args(call)
    ys, hs = [], []
    for d in range(w.shape[0]):
        y, h = gru_direction(x, w[d], r[d], b[d], _state(x, h0[d]), _steps(call, d),
                             bool(call.attr("linear_before_reset", 0)), call.attr("clip"))
        ys.append(y)
        hs.append(h)
    return _results(call, ys, hs)


def rnn(call: Call) -> tuple[np.ndarray, ...]:
    """h = tanh(x·Wᵀ + h·Rᵀ + Wb + Rb)."""
    if call.quantized:
        raise call.error("a quantized rnn has no integer semantics; only lstm and gru do")
    x, w, r, b, h0 = _float_args(call)
    hidden = int(call.attr("hidden_size"))
    bound = clipper(call.attr("clip"))
    ys, hs = [], []
    for d in range(w.shape[0]):
        h = _state(x, h0[d])
        bias = b[d, :hidden] + b[d, hidden:]
        y = np.zeros((x.shape[0], *h.shape))
        for t in _steps(call, d):
            h = np.tanh(bound(x[t] @ w[d].T + h @ r[d].T + bias))
            y[t] = h
        ys.append(y)
        hs.append(h)
    return _results(call, ys, hs)


# The integer steps: each helper is the integer semantics of one IR op kind on 8-bit
# codes with zero point 0 unless given (docs/ir.md, "Quantized semantics").


def gemm_codes(x: np.ndarray, w: np.ndarray, bias: np.ndarray, acc_scale: np.ndarray,
               scale: float) -> np.ndarray:
    """gemm: acc = x·wᵀ + bias (x centered, int64), saturated to int32, requantized with
    m[c] = acc_scale[c] / scale to int8 (zero point 0)."""
    acc = np.clip(x @ w.T + bias, -(2**31), 2**31 - 1)
    return saturate(rescale(acc, acc_scale / scale), "int8").astype(np.int64)


def add_codes(a: np.ndarray, sa: float, b: np.ndarray, sb: float, scale: float) -> np.ndarray:
    """add: (a·Ma + b·Mb) / 2^shift, rounded half to even, to int8."""
    ma, mb, shift = add_multipliers(sa, sb, scale)
    return saturate(rounding_shift(a * ma + b * mb, np.array(shift)), "int8").astype(np.int64)


def mul_codes(a: np.ndarray, za: int, sa: float, b: np.ndarray, zb: int, sb: float,
              scale: float) -> np.ndarray:
    """mul: (a - za)(b - zb) requantized with m = sa·sb / scale, to int8."""
    return saturate(rescale((a - za) * (b - zb), sa * sb / scale), "int8").astype(np.int64)


def function_table(function: Callable[[np.ndarray], np.ndarray], sx: float, sy: float,
                   zy: int) -> np.ndarray:
    """The lut of `function` from int8 codes of scale sx (zero point 0) to int8 codes of
    (sy, zy): table[k] = sat(rhe(f(sx·(k - 128)) / sy) + zy), in float64 as
    cimc.reference.activation.table computes it."""
    codes = np.arange(-128, 128, dtype=np.float64)
    scaled = np.rint(function(np.float64(sx) * codes) / np.float64(sy))
    return saturate(np.clip(scaled, -2.0**40, 2.0**40).astype(np.int64) + zy,
                    "int8").astype(np.int64)


def sigmoid_table(sx: float) -> np.ndarray:
    return function_table(_sigmoid, sx, GATE_SCALE, GATE_ZERO)


def complement_table(sx: float) -> np.ndarray:
    """1 - sigmoid, GRU's weight of the candidate state (sigmoid of the negated input)."""
    return function_table(lambda a: _sigmoid(-a), sx, GATE_SCALE, GATE_ZERO)


def tanh_table(sx: float) -> np.ndarray:
    return function_table(np.tanh, sx, TANH_SCALE, 0)


def _lookup(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return table[codes + 128]


@dataclass
class _Step:
    """What every step of a quantized op reads: x's codes less its zero point [T,N,D],
    W and R's codes, the two bias halves (int64), the scales of x, W, R and the six
    calibrated intermediates, and the initial states' codes broadcast to the batch."""

    x: np.ndarray
    w: np.ndarray
    r: np.ndarray
    bx: np.ndarray
    bh: np.ndarray
    sx: float
    sw: np.ndarray
    sr: np.ndarray
    scales: list[float]
    states: list[np.ndarray]


def _integer_step(call: Call, states: int) -> _Step:
    if call.attr("direction") == "bidirectional" or call.attr("layout", 0):
        raise call.error("a quantized recurrent op runs one direction in layout 0 (the "
                         "quantizer splits a bidirectional one)")
    x_type, w_type, r_type = call.types[:3]
    if x_type.quant is None or x_type.quant.per_channel:
        raise call.error("the input must be quantized per tensor")
    if w_type.quant is None or r_type.quant is None or w_type.dtype != "i8" \
            or r_type.dtype != "i8" or any(w_type.quant.zero_point + r_type.quant.zero_point):
        raise call.error("the weights must be int8 quantized symmetrically")
    sx, zx = quant_arrays(x_type, 0)
    hidden = int(call.attr("hidden_size"))
    b = call.args[3].astype(np.int64)[0]
    x = call.args[0].astype(np.int64) - zx
    return _Step(x=x, w=call.args[1][0].astype(np.int64), r=call.args[2][0].astype(np.int64),
                 bx=b[:b.size // 2], bh=b[b.size // 2:], sx=float(sx),
                 sw=np.asarray(w_type.quant.scale, np.float64),
                 sr=np.asarray(r_type.quant.scale, np.float64),
                 scales=[float(v) for v in call.attr("scales")],
                 states=[np.broadcast_to(call.args[4 + k][0].astype(np.int64),
                                         (x.shape[1], hidden)).copy() for k in range(states)])


def _state_scale(call: Call, index: int) -> float:
    quant = call.types[index].quant
    if quant is None or quant.per_channel or quant.zero_point != (0,):
        raise call.error(f"operand {index} (an initial state) must be quantized per tensor "
                         "with zero point 0")
    return float(quant.scale[0])


def lstm_codes(call: Call) -> tuple[np.ndarray, ...]:
    """The quantized LSTM step of docs/ir.md, T times: Y and Y_h in h0's quantization,
    Y_c in c0's."""
    step = _integer_step(call, 2)
    s_h, s_c = _state_scale(call, 4), _state_scale(call, 5)
    s_xg, s_hg, s_i, s_o, s_f, s_g = step.scales
    hidden = int(call.attr("hidden_size"))
    if np.any(call.args[6]):
        raise call.error("peepholes have no integer semantics")
    tables = [sigmoid_table(s_i), sigmoid_table(s_o), sigmoid_table(s_f), tanh_table(s_g)]
    cell_tanh = tanh_table(s_c)
    h, c = step.states
    y = np.zeros((step.x.shape[0], *h.shape), np.int64)
    for t in _steps(call, 0):
        xg = gemm_codes(step.x[t], step.w, step.bx, step.sx * step.sw, s_xg)
        hg = gemm_codes(h, step.r, step.bh, s_h * step.sr, s_hg)
        gates = [_lookup(table, add_codes(xg[:, k * hidden:(k + 1) * hidden], s_xg,
                                          hg[:, k * hidden:(k + 1) * hidden], s_hg, scale))
                 for k, (table, scale) in enumerate(zip(tables, (s_i, s_o, s_f, s_g),
                                                        strict=True))]
        i, o, f, g = gates
        kept = mul_codes(f, GATE_ZERO, GATE_SCALE, c, 0, s_c, s_c)
        new = mul_codes(i, GATE_ZERO, GATE_SCALE, g, 0, TANH_SCALE, s_c)
        c = add_codes(kept, s_c, new, s_c, s_c)
        h = mul_codes(o, GATE_ZERO, GATE_SCALE, _lookup(cell_tanh, c), 0, TANH_SCALE, s_h)
        y[t] = h
    dtype = call.result.numpy_dtype
    return (y[:, None].astype(dtype), h[None].astype(dtype), c[None].astype(dtype))


def gru_codes(call: Call) -> tuple[np.ndarray, ...]:
    """The quantized GRU step of docs/ir.md (linear_before_reset), T times: Y and Y_h in
    h0's quantization."""
    if not call.attr("linear_before_reset", 0):
        raise call.error("a quantized gru needs linear_before_reset=1 (torch's GRU)")
    step = _integer_step(call, 1)
    s_h = _state_scale(call, 4)
    s_xg, s_hg, s_z, s_r, s_rh, s_n = step.scales
    hidden = int(call.attr("hidden_size"))
    update, keep, reset = sigmoid_table(s_z), complement_table(s_z), sigmoid_table(s_r)
    candidate = tanh_table(s_n)
    h = step.states[0]
    y = np.zeros((step.x.shape[0], *h.shape), np.int64)
    for t in _steps(call, 0):
        xg = gemm_codes(step.x[t], step.w, step.bx, step.sx * step.sw, s_xg)
        hg = gemm_codes(h, step.r, step.bh, s_h * step.sr, s_hg)
        pre_z = add_codes(xg[:, :hidden], s_xg, hg[:, :hidden], s_hg, s_z)
        pre_r = add_codes(xg[:, hidden:2 * hidden], s_xg, hg[:, hidden:2 * hidden], s_hg, s_r)
        r_h = mul_codes(_lookup(reset, pre_r), GATE_ZERO, GATE_SCALE, hg[:, 2 * hidden:], 0,
                        s_hg, s_rh)
        n = _lookup(candidate, add_codes(xg[:, 2 * hidden:], s_xg, r_h, s_rh, s_n))
        h = add_codes(mul_codes(_lookup(keep, pre_z), GATE_ZERO, GATE_SCALE, n, 0,
                                TANH_SCALE, s_h), s_h,
                      mul_codes(_lookup(update, pre_z), GATE_ZERO, GATE_SCALE, h, 0, s_h, s_h),
                      s_h, s_h)
        y[t] = h
    dtype = call.result.numpy_dtype
    return y[:, None].astype(dtype), h[None].astype(dtype)


# Their results are tuples (Y, Y_h[, Y_c]): the interpreter binds one per op result.
KERNELS: dict[str, Callable[[Call], Any]] = {"lstm": lstm, "gru": gru, "rnn": rnn}
