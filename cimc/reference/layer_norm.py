"""The integer LayerNormalization over the last axis (a transformer's tokens, docs/ir.md
"layer_norm"): mean and variance exactly from the codes, a reciprocal square root, and
gamma and beta as per-channel fixed-point constants.

With x 8-bit per tensor (sx, zx) over D channels and the result 8-bit per tensor (sy, zy),
per token, c = x - zx (|c| <= 255):

    S1 = Σ c,   S2 = Σ c²,   V = D·S2 - S1²      (D² times the variance, in units of sx²)
    Q = max(V·2^m + E, (D-1)·2^m),   E = rhe(eps · D² · 2^m / sx²)
    R = floor(2^k / sqrt(Q))            (`visqrt.i32`; ≈ 2^K·sx / (D·sqrt(var + eps)))
    n = (D·c - S1) · R                           (the normalized value times 2^K, K = k - m/2)
    t = (n >> a) + B                             (B = rhe(beta / gamma · 2^(K-a)))
    y = min(max(sat(rhe(t · M / 2^shift) + zp), lo), hi)   (M·2^-shift ≈ gamma/sy · 2^-(K-a))

A channel whose gamma moves the result by less than 2^-10 of a quantum (gamma = 0
included) has M = 0, B = 0 and zp = zy + rhe(beta / sy). Every step is exact in int32 (the
products of `requant` in int64): V < 2^31 (D·S2 and S1² may wrap, their difference does
not), |D·c - S1| <= sqrt((D-1)·V) so |n| < 2^30, and `a` makes room for B. `constants`
refuses (ValueError) a D or scales that leave int32, or for which the error bound it works
out (before the final rounding, over results inside the clamp) exceeds half a quantum:
below it the result is within one quantum of the exact LayerNorm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cimc.reference.call import Call
from cimc.reference.requant import MAX_SHIFT, fixed_point, rounding_shift

# |D·c - S1| · R stays below 2^HEADROOM (`a` keeps (n >> a) + B below 2^31).
HEADROOM = 30
# A channel whose gamma term is below this many quanta at its largest counts as gamma = 0.
NEGLIGIBLE = 2.0**-10
# The largest error the constants may leave before the final rounding, in quanta.
ERROR_BUDGET = 0.5


@dataclass(frozen=True)
class LayerNormConstants:
    """What the integer LayerNorm of one layer reads besides the codes (see the module)."""

    d: int
    zx: int
    m: int
    e: int
    k: int
    a: int
    bias: np.ndarray  # B, int64 [D]
    mult: np.ndarray  # M, int64 [D]
    shift: np.ndarray  # int64 [D]
    zero: np.ndarray  # zp, int64 [D]
    error: float  # the bound on the error before the final rounding, in quanta

    @property
    def floor(self) -> int:
        """(D - 1)·2^m, the smallest V·2^m + E of a token that is not constant: Q is kept
        at least that, so R = floor(2^k / sqrt(Q)) <= 2^K / sqrt(D - 1) fits int32 (a
        constant token, V = 0, has D·c - S1 = 0 whatever R is)."""
        return (self.d - 1) << self.m


def inverse_sqrt(q: np.ndarray, k: int) -> np.ndarray:
    """floor(2^k / sqrt(q)) for int64 q >= 1, exactly: isqrt(floor(2^2k / q))
    (floor(sqrt(floor(z))) = floor(sqrt(z)) for z >= 0)."""
    flat = [math.isqrt((1 << (2 * k)) // int(v)) for v in np.asarray(q).ravel()]
    return np.asarray(flat, dtype=np.int64).reshape(np.shape(q))


def constants(d: int, sx: float, zx: int, sy: float, zy: int, epsilon: float,
              gamma: np.ndarray, beta: np.ndarray, reach: int) -> LayerNormConstants:
    """The layer's constants, in float64 from its scales, epsilon, gamma and beta; `reach`
    is the largest |code - zy| of a result inside its clamp."""
    if d < 2:
        raise ValueError("a LayerNorm over fewer than 2 channels")
    gamma = np.broadcast_to(np.asarray(gamma, np.float64), (d,))
    beta = np.broadcast_to(np.asarray(beta, np.float64), (d,))
    v_max = d * d * 255 * 255 // 4  # D² times the largest variance of codes 255 apart
    spread = math.sqrt(d - 1)  # the largest |normalized value|
    # K: |n| <= sqrt(D-1)·2^K < 2^HEADROOM.
    big_k = HEADROOM - 1 - math.floor(math.log2(spread))
    eps = float(epsilon) * d * d / (float(sx) ** 2)

    def e_of(m: int) -> int:
        return int(np.rint(eps * 2.0**m))

    m = 0
    while v_max * 2 ** (m + 2) + e_of(m + 2) < 2**31:
        m += 2
    if v_max * 2**m + e_of(m) >= 2**31:
        raise ValueError(f"{d} channels at input scale {sx:g} and epsilon {epsilon:g} leave "
                         "int32 (D·(D·S2 - S1²) + eps·D²/sx²)")
    k = big_k + m // 2
    g = gamma / float(sy)
    active = np.abs(g) * spread >= NEGLIGIBLE
    ratio = np.abs(beta[active] / gamma[active]).max(initial=0.0)
    a = 0
    while (spread + ratio) * 2.0 ** (big_k - a) + 2 >= 2.0**31:
        a += 1
    scale = big_k - a
    bias = np.where(active, np.rint(np.divide(beta, gamma, out=np.zeros(d), where=active)
                                    * 2.0**scale), 0).astype(np.int64)
    mant, shift = fixed_point(np.where(active, np.abs(g) * 2.0**-scale, 0.0))
    if (shift > MAX_SHIFT).any():
        raise ValueError("a gamma too small for the requantization's shift")
    mult = np.where(g < 0, -mant, mant)
    zero = np.where(active, zy, zy + np.rint(beta / float(sy))).astype(np.int64)
    q_max = v_max * 2**m + e_of(m)
    # E's rounding moves Q by delta (in units of V): the normalized value by at most
    # |D·c - S1|·delta / (2·Q^1.5) <= sqrt(D-1)·sqrt(V)·delta / (2·(V + eps')^1.5), largest
    # at V = eps'/2 or at the smallest nonzero V, D - 1.
    delta = abs(e_of(m) - eps * 2.0**m) / 2.0**m
    low = max(eps - delta, 0.0)
    worst_v = max(d - 1.0, low / 2)
    # The errors below grow with the normalized value; where its gamma term alone is a
    # quantum beyond the clamp (with beta's), both results are clamped alike, so only
    # normalized values up to (reach + 2 + |beta/sy|) / |gamma/sy| count.
    g_abs, b_abs = np.abs(g[active]), np.abs(beta[active] / float(sy))
    reached = np.minimum(spread, (reach + 2 + b_abs) / np.maximum(g_abs, 1e-300))
    error = float((g_abs * (
        reached * math.sqrt(q_max) / 2.0**k  # R's floor: |D·c - S1| / 2^K
        + np.minimum(spread * math.sqrt(worst_v) * delta / (2 * (worst_v + low) ** 1.5),
                     reached * delta / (2 * (d - 1 + low)))
        + (0.5 + (a > 0)) * 2.0**-scale)
        + (g_abs * spread + b_abs) * 2.0**-29).max(initial=0.0))  # M's rounding
    negligible = float((np.abs(g[~active]) * spread).max(initial=0.0))
    error = max(error, negligible)
    if error > ERROR_BUDGET:
        raise ValueError(f"gamma / sy up to {np.abs(g).max():.3g} over {d} channels would "
                         f"leave the result {error:.3g} quanta from the exact LayerNorm")
    return LayerNormConstants(d, zx, m, e_of(m), k, a, bias, mult.astype(np.int64),
                              shift.astype(np.int64), zero, error)


def normalize(codes: np.ndarray, c: LayerNormConstants, lo: int, hi: int) -> np.ndarray:
    """The integer LayerNorm of int codes [..., D] (lo, hi: the result's clamp), int64."""
    x = codes.astype(np.int64) - c.zx
    s1 = x.sum(axis=-1, keepdims=True)
    v = c.d * (x * x).sum(axis=-1, keepdims=True) - s1 * s1
    r = inverse_sqrt(np.maximum((v << c.m) + c.e, c.floor), c.k)
    t = (((c.d * x - s1) * r) >> c.a) + c.bias
    y = rounding_shift(t * c.mult, c.shift) + c.zero
    return np.clip(y, lo, hi)


def integer_layer_norm(call: Call) -> np.ndarray:
    x, x_type, y_type = call.args[0], call.types[0], call.result
    for ty in (x_type, y_type):
        if ty.quant is None or ty.quant.axis is not None or ty.dtype not in ("i8", "u8"):
            raise call.error("a quantized layer_norm needs 8-bit tensors quantized per tensor")
    if int(call.attr("axis")) != x.ndim - 1:
        raise call.error("a quantized layer_norm works over the last axis")
    assert x_type.quant is not None and y_type.quant is not None
    beta = call.args[2] if len(call.args) > 2 else np.zeros(1)
    info = np.iinfo(y_type.numpy_dtype)
    lo, hi = int(info.min), int(info.max)
    clamp = call.attr("clamp")
    if clamp is not None:
        lo, hi = max(lo, int(clamp[0])), min(hi, int(clamp[1]))
    zy = y_type.quant.zero_point[0]
    try:
        consts = constants(x.shape[-1], x_type.quant.scale[0], x_type.quant.zero_point[0],
                           y_type.quant.scale[0], zy, float(call.attr("epsilon", 1e-5)),
                           call.args[1].astype(np.float64).reshape(-1),
                           beta.astype(np.float64).reshape(-1), max(hi - zy, zy - lo))
    except ValueError as exc:
        raise call.error(str(exc)) from None
    return normalize(x, consts, lo, hi).astype(y_type.numpy_dtype)
