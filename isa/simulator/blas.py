"""One BLAS thread while the simulator runs.

The simulator's matrix products are small (a batch of inputs times one
crossbar group, at most a few hundred rows and columns), issued one at a time
from the interpreter. OpenBLAS splits such a product over all cores and
spin-waits between them; on a machine whose cores are busy with other work
that makes each product 10-50x slower than on one thread (measured: 1000x128
by 128x128 float32, 16 ms on 2 busy cores vs 0.28 ms on one). So a run sets
OpenBLAS to one thread and restores the previous count afterwards. A user who
sets OPENBLAS_NUM_THREADS keeps their choice; without OpenBLAS (or without a
way to find it) nothing changes.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

# Setter/getter names by OpenBLAS build: numpy's wheels (scipy-openblas, 64-bit ints), then
# a system OpenBLAS.
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _candidates() -> list[str]:
    """Paths of the OpenBLAS numpy uses: its wheel's bundled copy, else any loaded one."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    found = sorted(glob.glob(os.path.join(libs, "*openblas*")))
    if not found and os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as maps:
            found = sorted({line.split()[-1] for line in maps if "openblas" in line})
    return found


def _controls() -> tuple[Any, Any] | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: this returns the same handle
        except OSError:
            continue
        for setter, getter in _SYMBOLS:
            if hasattr(lib, setter) and hasattr(lib, getter):
                return getattr(lib, setter), getattr(lib, getter)
    return None


_CONTROLS: tuple[Any, Any] | None = None
_LOOKED_UP = False


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the body with OpenBLAS on one thread (see the module docstring)."""
    global _CONTROLS, _LOOKED_UP
    if not _LOOKED_UP:
        _CONTROLS = None if "OPENBLAS_NUM_THREADS" in os.environ else _controls()
        _LOOKED_UP = True
    if _CONTROLS is None:
        yield
        return
    setter, getter = _CONTROLS
    before = int(getter())
    setter(1)
    try:
        yield
    finally:
        setter(before)
