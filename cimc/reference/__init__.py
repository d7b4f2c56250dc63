"""The reference interpreter of the tensor IR: the definition of its semantics.

Float ops compute in float64 and round to float32 (matching onnxruntime to
float32 precision); quantized ops compute exactly in integers as docs/ir.md
("Quantized semantics") states. One small kernel per op kind, in the manner of
the onnx reference evaluator; `KERNELS` maps each kind to its kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module
from cimc.reference import (
    activation,
    elementwise,
    integer,
    layout,
    linear,
    movement,
    pool,
    recurrent,
    resize,
)
from cimc.reference.batch import batch_stretch, batched_values, join_batches, vectorizes
from cimc.reference.call import Call

# A kernel returns its op's result (a tuple of them for an op of several: lstm, gru).
Kernel = Callable[[Call], np.ndarray]

KERNELS: dict[str, Kernel] = {
    **linear.KERNELS,
    **pool.KERNELS,
    **elementwise.KERNELS,
    **activation.KERNELS,
    **layout.KERNELS,
    **movement.KERNELS,
    **integer.KERNELS,
    **recurrent.KERNELS,
    **resize.KERNELS,
}


def kernel_for(kind: str, op_name: str) -> Kernel:
    kernel = KERNELS.get(kind)
    if kernel is None:
        known = ", ".join(sorted(KERNELS))
        raise CimcError(
            f"op {op_name!r}: the reference interpreter has no op kind {kind!r} (known: {known})"
        )
    return kernel


def run_module(module: Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate `module` on `feeds` (input name -> array); return output name -> array.

    Each input may hold a multiple of the IR's batch stacked on axis 0; the
    outputs then hold the results of every slice in the same order.
    """
    for name in module.inputs:
        if name in feeds and np.asarray(feeds[name]).dtype != module.values[name].numpy_dtype:
            raise CimcError(
                f"input {name!r} has element type {np.asarray(feeds[name]).dtype}, "
                f"expected {module.values[name].numpy_dtype}"
            )
    stretch = batch_stretch(module, feeds)
    if stretch > 1 and not vectorizes(module):
        return _run_slices(module, feeds, stretch)
    return _evaluate(module, {name: np.asarray(feeds[name]) for name in module.inputs}, stretch)


def _run_slices(
    module: Module, feeds: dict[str, np.ndarray], stretch: int
) -> dict[str, np.ndarray]:
    results = []
    for i in range(stretch):
        part = {}
        for name in module.inputs:
            batch = module.values[name].shape[0]
            part[name] = np.asarray(feeds[name])[i * batch : (i + 1) * batch]
        results.append(_evaluate(module, part, 1))
    return {name: join_batches([r[name] for r in results]) for name in module.outputs}


def _evaluate(module: Module, feeds: dict[str, np.ndarray], stretch: int) -> dict[str, np.ndarray]:
    env: dict[str, np.ndarray] = {**module.constants, **feeds}
    batched = batched_values(module) if stretch > 1 else set()
    for op in module.ops():
        kernel = kernel_for(op.kind, op.name)
        result = module.values[op.outputs[0]]
        call = Call(
            op=op,
            args=[env[v] for v in op.inputs],
            types=[module.values[v] for v in op.inputs],
            result=result,
            stretch=stretch if op.outputs[0] in batched else 1,
        )
        try:
            computed = kernel(call)
        except ValueError as exc:  # operands the op cannot take: the module is inconsistent
            raise CimcError(f"op {op.name!r} ({op.kind}): {exc}") from None
        values = computed if isinstance(computed, tuple) else (computed,)
        for name, value in zip(op.outputs, values, strict=True):
            result = module.values[name]
            if value.shape != call.result_shape(result) or value.dtype != result.numpy_dtype:
                raise CimcError(
                    f"op {op.name!r} ({op.kind}) computed {value.dtype}{list(value.shape)} but "
                    f"its IR type is {result.dtype}{list(result.shape)}; the module is "
                    "inconsistent")
            env[name] = value
    return {name: env[name] for name in module.outputs}


__all__ = ["KERNELS", "Call", "run_module"]
