"""The quantized tensors a compiled program exchanges with the host, computed by
the reference interpreter: the oracle the simulator must equal bit for bit.

The program reads the quantized module inputs and writes the quantized
tensors that the host dequantizes (cimc/dialect/host.py `ports`), in global
memory layout (NHWC for images). `reference_codes` runs the integer module
(before `lower`) and returns exactly those codes, keyed like the program's
`.input` / `.output` directives.
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.host import ports
from cimc.ir.module import Module, TensorType
from cimc.reference import run_module


def to_storage(codes: np.ndarray) -> np.ndarray:
    """[batch, C, H, W] -> [batch, H, W, C]; other ranks unchanged."""
    return codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes


def from_samples(codes: np.ndarray, ty: TensorType) -> np.ndarray:
    """A program port's codes, one sample per entry of axis 0 (NHWC for images), as the
    module's tensor of type `ty` stacked on axis 0: NCHW, and a sample of a tensor whose
    axis 0 is not a batch (a time-major sequence [T, 1, C], one sample [T·1, C] of the
    same bytes to the program: passes/lower/batch.py) as T entries."""
    nchw = codes.transpose(0, 3, 1, 2) if codes.ndim == 4 else codes
    return nchw.reshape(-1, *ty.shape[1:])


def fit_inputs(module: Module, name: str, values: np.ndarray) -> np.ndarray:
    """Float inputs `values` for module input `name` as [batch, *shape without batch]."""
    shape = module.values[name].shape[1:]
    values = np.asarray(values, dtype=np.float32)
    size = int(np.prod(shape, dtype=np.int64))
    if values.size % size or values.size == 0:
        raise CimcError(f"inputs of shape {list(values.shape)} do not hold whole samples of "
                        f"input {name!r}, shape {list(shape)}")
    return values.reshape(-1, *shape)


def reference_codes(integer: Module, feeds: dict[str, np.ndarray]
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(input codes, output codes) by program port name, for float `feeds` by input name."""
    inputs, outputs = ports(integer)
    probe = integer.copy_sharing_constants()
    probe.outputs = [p.value for p in inputs + outputs]
    values = run_module(probe, {k: fit_inputs(integer, k, v) for k, v in feeds.items()})
    return ({p.name: to_storage(values[p.value]) for p in inputs},
            {p.name: to_storage(values[p.value]) for p in outputs})
