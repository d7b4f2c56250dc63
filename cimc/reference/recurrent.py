"""lstm, gru and rnn: ONNX's recurrent layers, one time step after another.

Float semantics are ONNX's (docs/ir.md, "Recurrent layers") with its default
activations (sigmoid for the gates, tanh for the cell and the hidden state), in
float64, rounded to float32 once at the end as the other float kernels do.
Each kernel returns every result of its op: Y, the last h (and the last c).
"""

from __future__ import annotations

import numpy as np

from cimc.reference.call import Call


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


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


def _clip(call: Call, pre: np.ndarray) -> np.ndarray:
    bound = call.attr("clip")
    return pre if bound is None else np.clip(pre, -float(bound), float(bound))


def lstm(call: Call) -> tuple[np.ndarray, ...]:
    """Gates in ONNX's order i, o, f, c (W, R, B), peepholes i, o, f (P)."""
    x, w, r, b, h0, c0, p = _float_args(call)
    hidden = int(call.attr("hidden_size"))
    ys, hs, cs = [], [], []
    for d in range(w.shape[0]):
        h, c = _state(x, h0[d]), _state(x, c0[d])
        bias = b[d, :4 * hidden] + b[d, 4 * hidden:]
        pi, po, pf = np.split(p[d], 3)
        y = np.zeros((x.shape[0], *h.shape))
        for t in _steps(call, d):
            gi, go, gf, gc = np.split(x[t] @ w[d].T + h @ r[d].T + bias, 4, axis=-1)
            i = _sigmoid(_clip(call, gi + pi * c))
            f = _sigmoid(_clip(call, gf + pf * c))
            c = f * c + i * np.tanh(_clip(call, gc))
            o = _sigmoid(_clip(call, go + po * c))  # the output gate peeps at the new c
            h = o * np.tanh(c)
            y[t] = h
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return _results(call, ys, hs, cs)


def gru(call: Call) -> tuple[np.ndarray, ...]:
    """Gates in ONNX's order z, r, h; `linear_before_reset` applies r after R's product
    (torch's GRU) rather than before it."""
    x, w, r, b, h0 = _float_args(call)
    hidden = int(call.attr("hidden_size"))
    before_reset = bool(call.attr("linear_before_reset", 0))
    ys, hs = [], []
    for d in range(w.shape[0]):
        h = _state(x, h0[d])
        wb, rb = b[d, :3 * hidden], b[d, 3 * hidden:]
        y = np.zeros((x.shape[0], *h.shape))
        for t in _steps(call, d):
            xw = x[t] @ w[d].T + wb
            z = _sigmoid(_clip(call, xw[:, :hidden] + h @ r[d, :hidden].T + rb[:hidden]))
            reset = _sigmoid(_clip(call, xw[:, hidden:2 * hidden]
                                   + h @ r[d, hidden:2 * hidden].T + rb[hidden:2 * hidden]))
            rh = r[d, 2 * hidden:]
            if before_reset:
                recurrent = reset * (h @ rh.T + rb[2 * hidden:])
            else:
                recurrent = (reset * h) @ rh.T + rb[2 * hidden:]
            n = np.tanh(_clip(call, xw[:, 2 * hidden:] + recurrent))
            h = (1.0 - z) * n + z * h
            y[t] = h
        ys.append(y)
        hs.append(h)
    return _results(call, ys, hs)


def rnn(call: Call) -> tuple[np.ndarray, ...]:
    """h = tanh(x·Wᵀ + h·Rᵀ + Wb + Rb)."""
    x, w, r, b, h0 = _float_args(call)
    hidden = int(call.attr("hidden_size"))
    ys, hs = [], []
    for d in range(w.shape[0]):
        h = _state(x, h0[d])
        bias = b[d, :hidden] + b[d, hidden:]
        y = np.zeros((x.shape[0], *h.shape))
        for t in _steps(call, d):
            h = np.tanh(_clip(call, x[t] @ w[d].T + h @ r[d].T + bias))
            y[t] = h
        ys.append(y)
        hs.append(h)
    return _results(call, ys, hs)


KERNELS = {"lstm": lstm, "gru": gru, "rnn": rnn}
