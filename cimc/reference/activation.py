"""Unary activations: their float functions, the float kernels, and the integer `lut`.

`FUNCTIONS` holds each activation kind's real function in float64, with the ONNX
attribute defaults. The float kernels apply it and round to float32; fold-qdq
tabulates it over the 256 codes of a quantized input (`table`), and the `lut`
kernel indexes that table: the integer semantics of every quantized activation
is one table lookup (docs/ir.md, "lut").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cimc.reference.call import Call
from cimc.reference.requant import saturate

Function = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]

# ONNX Selu's defaults (float32 values, as the attributes hold them).
SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _hard_sigmoid(x: np.ndarray, a: Mapping[str, Any]) -> np.ndarray:
    return np.clip(float(a.get("alpha", 0.2)) * x + float(a.get("beta", 0.5)), 0.0, 1.0)


def _elu(x: np.ndarray, a: Mapping[str, Any]) -> np.ndarray:
    # expm1 of the negative part only: exp of a large positive x would overflow for nothing.
    return np.where(x > 0, x, float(a.get("alpha", 1.0)) * np.expm1(np.minimum(x, 0.0)))


def _selu(x: np.ndarray, a: Mapping[str, Any]) -> np.ndarray:
    alpha, gamma = float(a.get("alpha", SELU_ALPHA)), float(a.get("gamma", SELU_GAMMA))
    return gamma * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _gelu(x: np.ndarray, a: Mapping[str, Any]) -> np.ndarray:
    if a.get("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


FUNCTIONS: dict[str, Function] = {
    "sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "tanh": lambda x, a: np.tanh(x),
    "hard_sigmoid": _hard_sigmoid,
    "hard_swish": lambda x, a: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "leaky_relu": lambda x, a: np.where(x >= 0, x, float(a.get("alpha", 0.01)) * x),
    "elu": _elu,
    "selu": _selu,
    "softplus": lambda x, a: np.logaddexp(0.0, x),
    "gelu": _gelu,
    "erf": lambda x, a: _erf(x),
}
GELU_APPROXIMATIONS = ("none", "tanh")


def table(kind: str, attrs: Mapping[str, Any], x_dtype: np.dtype, sx: float, zx: int,
          y_dtype: np.dtype, sy: float, zy: int) -> np.ndarray:
    """The 256 result codes of activation `kind` for the input codes lowest..highest of
    `x_dtype`: `sat(rhe(f(sx * (q - zx)) / sy) + zy)`, all in float64."""
    info = np.iinfo(x_dtype)
    codes = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    real = FUNCTIONS[kind](np.float64(sx) * (codes - zx).astype(np.float64), attrs)
    scaled = np.rint(real / np.float64(sy))
    # Bounded before the cast: an inf (sigmoid's scale underflow) or huge value saturates.
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), -2.0**40, 2.0**40).astype(np.int64)
    return saturate(scaled + zy, y_dtype)


def _float_kernel(kind: str) -> Callable[[Call], np.ndarray]:
    def kernel(call: Call) -> np.ndarray:
        if call.quantized or call.types[0].dtype != "f32":
            raise call.error(f"{kind} computes on f32 tensors, not {call.types[0].dtype}; "
                             "a quantized activation is a `lut` (fold-qdq makes it)")
        x = call.args[0].astype(np.float64)
        return FUNCTIONS[kind](x, call.op.attrs).astype(np.float32)

    return kernel


def lut(call: Call) -> np.ndarray:
    """y = table[x - lowest code of x's type]."""
    x, codes = call.args
    x_type = call.types[0]
    if x_type.dtype not in ("i8", "u8") or codes.shape != (256,):
        raise call.error(f"lut needs an 8-bit operand and a table of 256 codes, got "
                         f"{x_type.dtype} and {list(codes.shape)}")
    lowest = int(np.iinfo(x.dtype).min)
    return codes.astype(call.result.numpy_dtype)[x.astype(np.int64) - lowest]


KERNELS = {**{kind: _float_kernel(kind) for kind in FUNCTIONS}, "lut": lut}
