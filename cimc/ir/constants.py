"""Constant data in .cir text, both ways: numpy array to text, parse tree to array.

Small constants print as a literal list or `splat(v)`, the rest as base64 of
the little-endian bytes; every form reads back to the same bits.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import DTYPES, TensorType
from cimc.ir.printer import type_text

# Constants with at most this many elements print as a literal list.
LITERAL_LIMIT = 16
# Constants a .cir file may define: beyond this it is a typo, not a model.
MAX_CONSTANT_BYTES = 1 << 30
INTEGER = re.compile(r"[-+]?\d+")

# Makes the error for a message at a parse-tree place (a token or a tree).
ErrorAt = Callable[[str, Any], CimcError]


# ---- printing -----------------------------------------------------------

def constant_text(array: np.ndarray, elide: bool) -> str:
    """The data of a constant: splat, literal list, base64, or `elided` if `elide`."""
    flat = array.reshape(-1)
    if flat.size == 0:
        return "[]"
    bits = flat.view(f"u{flat.dtype.itemsize}")  # compare bits: -0.0 and NaN count
    if (bits == bits[0]).all():
        text = _element_text(flat[0], flat.dtype)
        if _reads_back([text], flat[:1]):
            return f"splat({text})"
    if flat.size <= LITERAL_LIMIT:
        texts = [_element_text(v, flat.dtype) for v in flat]
        if _reads_back(texts, flat):
            return "[" + ", ".join(texts) + "]"
    if elide:
        return "elided"
    raw = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
    return 'base64"' + base64.b64encode(raw).decode("ascii") + '"'


def _element_text(value: Any, dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "true" if value else "false"
    if dtype.kind == "f":
        return str(np.float32(value))  # shortest text that reads back as this float32
    return str(int(value))


def _reads_back(texts: list[str], flat: np.ndarray) -> bool:
    """Whether decimal texts give these exact bits (not so for NaN payloads)."""
    if flat.dtype.kind != "f":
        return True
    back = np.array([float(t) for t in texts], dtype=np.float64).astype(flat.dtype)
    return back.tobytes() == flat.tobytes()


# ---- parsing ------------------------------------------------------------

def read_integer(token: Any, error: ErrorAt) -> int:
    """An integer token (a NUMBER that must have no fraction or exponent)."""
    if not INTEGER.fullmatch(token):
        raise error(f"expected an integer, got '{token}'", token)
    return int(token)


def list_items(tree: Any) -> list[Any]:
    """The elements of a `list` tree (an empty list has one None placeholder)."""
    return [c for c in tree.children if c is not None]


def read_constant(tree: Any, type_: TensorType, error: ErrorAt) -> np.ndarray:
    """The array a `data` tree gives for a constant of `type_`, checked against it."""
    dtype = type_.numpy_dtype
    nbytes = math.prod(type_.shape) * dtype.itemsize
    if nbytes > MAX_CONSTANT_BYTES:
        raise error(f"constant of type {type_text(type_)} would take {nbytes} bytes, more "
                    f"than the {MAX_CONSTANT_BYTES} a .cir constant may hold", tree)
    if tree.data == "splat":
        return np.full(type_.shape, _element(tree.children[0], dtype, error), dtype=dtype)
    if tree.data == "elided":
        return np.zeros(type_.shape, dtype=dtype)
    if tree.data == "base64":
        token = tree.children[0]
        try:
            raw = base64.b64decode(token[len('base64"'):-1], validate=True)
        except binascii.Error as exc:
            raise error(f"bad base64 data: {exc}", token) from None
        if len(raw) != type_.size * dtype.itemsize:
            raise error(
                f"base64 data has {len(raw)} bytes but {type_text(type_)} needs "
                f"{type_.size * dtype.itemsize}", token)
        little = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
        return little.astype(dtype).reshape(type_.shape)
    elements = list_items(tree.children[0])  # data -> list
    if len(elements) != type_.size:
        raise error(
            f"constant has {len(elements)} elements but its type {type_text(type_)} "
            f"has {type_.size}", tree)
    values = [_element(v, dtype, error) for v in elements]
    return np.array(values, dtype=dtype).reshape(type_.shape)


def _element(value: Any, dtype: np.dtype, error: ErrorAt) -> Any:
    """One constant element, checked against the element type."""
    if not isinstance(value, str):  # a tree: true or false
        if dtype != np.bool_:
            raise error(f"{value.data} is not a {_dtype_name(dtype)} value", value)
        return value.data == "true"
    if dtype == np.bool_:
        raise error(f"expected true or false, got '{value}'", value)
    if dtype.kind == "f":
        number = float(value)
        with np.errstate(over="ignore"):
            overflows = np.isfinite(number) and not np.isfinite(np.float32(number))
        if overflows:
            raise error(f"{value} is out of range for f32", value)
        return number
    integer = read_integer(value, error)
    info = np.iinfo(dtype)
    if not info.min <= integer <= info.max:
        raise error(
            f"{integer} is out of range for {_dtype_name(dtype)} "
            f"[{info.min}, {info.max}]", value)
    return integer


def _dtype_name(dtype: np.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)
