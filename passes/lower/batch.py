"""A batch baked into a model's shapes becomes samples of a run (the first step of
`lower`, for the chip; the module before it, which the reference interpreter runs,
keeps the batch).

An exporter traced with a batch of N > 1 writes N into every shape: the inputs,
the activations, the concrete target shape of each Reshape. When every op of the
module treats axis 0 as N independent samples, the module computes N runs of its
batch-1 form, so `unbatch` rewrites it to batch 1: the program computes one
sample, and `cimc run` / `sim` / `Program.simulate` take the model's N samples
(or any number) stacked on axis 0, as they take a batch-1 model's. An op that
mixes the samples (a reshape or transpose moving axis 0, a concat, softmax or
reduction over it, a constant with a value per sample, quantization per sample) is
an error naming it.
"""

from __future__ import annotations

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op

# Kinds whose operands broadcast element-wise: a constant with a row per sample would
# give each sample its own values.
ELEMENTWISE = ("add", "sub", "mul", "div")


def unbatch(module: Module) -> None:
    """Rewrite a module whose inputs share a batch N > 1 to batch 1 (module docstring)."""
    batches = {module.values[v].shape[0] for v in module.inputs
               if len(module.values[v].shape) >= 2}
    if len(batches) != 1:
        return
    n = batches.pop()
    if n == 1:
        return
    # The values computed from the inputs: the ones with samples (weights, even
    # dequantized at run time, have none).
    sampled = set(module.inputs)
    ops = []
    for op in module.ops():
        if sampled.intersection(op.inputs):
            ops.append(op)
            sampled.update(op.outputs)
    for op in ops:
        reason = _mixes_samples(module, op, n)
        if reason:
            raise CimcError(f"op {op.name!r} ({op.kind}) {reason}; the model has a batch of {n} "
                            "baked into its shapes and cimc compiles one sample at a time, "
                            "which needs every op to keep axis 0 as independent samples: "
                            "export the model with batch 1")
    for name in sampled:
        shape = module.values[name].shape
        if len(shape) >= 2 and shape[0] == n:
            module.values[name] = module.values[name].with_shape((1, *shape[1:]))
    for op in ops:
        if op.kind == "reshape":
            op.attrs["shape"] = [1, *op.attrs["shape"][1:]]


def _mixes_samples(module: Module, op: Op, n: int) -> str | None:
    """Why `op` does not compute each sample on its own, or None."""
    out = module.values[op.outputs[0]].shape if op.outputs else ()
    rank = len(out)

    def axis(value: int) -> int:
        return value + rank if value < 0 else value

    for value in [*op.inputs, *op.outputs]:
        quant = module.values[value].quant
        if (value not in module.constants and quant is not None and quant.per_channel
                and axis(quant.axis or 0) == 0):
            return "is quantized per sample (per-channel along axis 0)"
    if len(out) < 2 or out[0] != n:
        return f"turns the {n} samples into shape {list(out)}"
    if op.kind == "transpose" and op.attrs["perm"][0] != 0:
        return f"moves the batch axis (perm {list(op.attrs['perm'])})"
    if op.kind == "take" and 0 in op.attrs["axes"]:
        return "picks along the batch axis"
    if op.kind in ("concat", "softmax", "log_softmax") and axis(int(op.attrs["axis"])) == 0:
        return "works along the batch axis"
    if op.kind == "reduce_mean" and 0 in [axis(int(a)) for a in op.attrs["axes"]]:
        return "reduces over the batch axis"
    if op.kind == "matmul" and any(v not in module.constants for v in op.inputs[1:]):
        return "multiplies two runtime tensors"
    if op.kind in ELEMENTWISE:
        for value in op.inputs:
            shape = module.values[value].shape
            if value in module.constants and len(shape) == rank and shape[0] == n:
                return f"reads constant {value!r} with a value per sample"
    return None
