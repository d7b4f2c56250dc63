"""concat, gather, reshape and transpose: they move values (or integer codes) around,
requantizing only when an operand's quantization differs from the result's."""

from __future__ import annotations

import numpy as np

from cimc.ir.module import TensorType
from cimc.reference.call import Call
from cimc.reference.integer import requantize_codes


def _to_result(call: Call, x: np.ndarray, ty: TensorType) -> np.ndarray:
    if call.quantized:
        return requantize_codes(x, ty, call.result)
    return x.astype(call.result.numpy_dtype)


def concat(call: Call) -> np.ndarray:
    parts = [_to_result(call, x, ty) for x, ty in zip(call.args, call.types, strict=True)]
    return np.concatenate(parts, axis=int(call.attr("axis")))


def reshape(call: Call) -> np.ndarray:
    return _to_result(call, call.args[0], call.types[0]).reshape(call.result_shape())


def transpose(call: Call) -> np.ndarray:
    perm = call.attr("perm")
    x = _to_result(call, call.args[0], call.types[0])
    return np.transpose(x, None if perm is None else tuple(perm))


def identity(call: Call) -> np.ndarray:
    """Kept only where it names a model output that is a model input (canonicalize)."""
    return _to_result(call, call.args[0], call.types[0])


KERNELS = {"concat": concat, "identity": identity, "reshape": reshape, "transpose": transpose}
