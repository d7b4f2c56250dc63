"""A batch baked into a model's shapes becomes samples of a run (the first step of
`lower`, for the chip; the module before it, which the reference interpreter runs,
keeps the batch).

An exporter traced with a batch of N > 1 writes N into every shape: the inputs,
the activations, the concrete target shape of each Reshape. When every op of the
module keeps the N samples independent, the module computes N runs of its
batch-1 form, so `unbatch` rewrites it to batch 1: the program computes one
sample, and `cimc run` / `sim` / `Program.simulate` take the model's N samples
(or any number) stacked on axis 0, as they take a batch-1 model's. The samples
start on axis 0 of the inputs; a transpose, a reshape that keeps them one axis, and
a recurrent layer (which reads them on its batch axis, axis 1 of [T, N, D], and
writes them on axis 2 of Y, 1 of its states: torch's batch_first layers behind the
exporter's transposes) move their axis, element-wise ops keep it, a matmul of two
runtime tensors keeps it on a leading axis of both, and every other op needs them on
axis 0. A reshape may also merge the samples into an axis with others, as a digit of
its index: axis 0 of [N·T, D] holds sample 0's T rows, then sample 1's (onnxruntime's
pre-processing makes a Linear over tokens a Gemm of such rows), and axis 0 of [T·N, D]
holds row 0 of every sample, then row 1 (the legacy exporter's attention, time-major,
and its heads [T, N·heads, d]). Such a *merged* axis, its samples `stride` indices
apart, is kept by element-wise ops, moved by transposes, read row by row by a gemm or
matmul (not as their contraction axis), and split out or merged on by reshapes; after
the rewrite the ops that read it see 1/N of it. An op that mixes the samples (a
reshape that splits them over two axes, a concat, softmax or reduction over their
axis, a constant with a value per sample, quantization per sample, an initial state
differing per sample) is an error naming it. A recurrent layer reading the inputs'
axis 0 as its time axis (torch's time-major LSTM and GRU, [T, 1, D]) means they hold
no batch: each input [T, ..., D] becomes one sample [1, T·..., D] (the same bytes,
reshaped back after its quantize), so that a run, which takes samples stacked on
axis 0, reads one sequence per sample.
"""

from __future__ import annotations

import math

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op

# Kinds whose operands broadcast element-wise: a constant with a row per sample would
# give each sample its own values.
ELEMENTWISE = ("add", "sub", "mul", "div")
# Kinds that keep the samples on whatever axis they are (element-wise).
KEEPS_AXIS = (*ELEMENTWISE, "quantize", "dequantize", "requantize", "relu", "clip", "lut",
              "identity", "sigmoid", "tanh")
RECURRENT = ("lstm", "gru", "rnn")
STATES = (4, 5)  # a recurrent op's initial states h0 and (lstm) c0, after x, w, r, b


def unbatch(module: Module) -> None:
    """Rewrite a module whose inputs share a batch N > 1 to batch 1 (module docstring)."""
    batches = {module.values[v].shape[0] for v in module.inputs
               if len(module.values[v].shape) >= 2}
    if len(batches) != 1:
        return
    n = batches.pop()
    if n == 1:
        return
    # The values computed from the inputs, with the axis of their samples (weights, even
    # dequantized at run time, have none).
    sampled = {name: 0 for name in module.inputs}
    stride: dict[str, int] = {}  # merged values: the index step between their samples
    merged_by: dict[str, Op] = {}
    ops = []
    for op in module.ops():
        if not sampled.keys() & set(op.inputs):
            continue
        ops.append(op)
        if op.kind in RECURRENT and sampled.get(op.inputs[0]) == int(op.attrs.get("layout", 0)):
            _lead_with_one_sample(module)  # axis 0 is a recurrent layer's time axis
            return
        if op.kind == "reshape":
            axes, reason = _reshape_axes(module, op, n, sampled, stride)
        elif stride.keys() & set(op.inputs):
            axes, reason = _merged_axes(module, op, n, sampled, stride)
        else:
            axes, reason = _sample_axes(module, op, n, sampled)
        if reason:
            _refuse(op, reason, n)
        sampled.update(axes)
        for value in axes:
            if value in stride:  # the op that merged the samples, for the error below
                merged_by[value] = next((merged_by[v] for v in op.inputs if v in merged_by),
                                        op)
    for value in module.outputs:
        if value in stride:  # a run stacks each sample's results on axis 0
            origin = merged_by[value]
            _refuse(origin, f"turns the {n} samples into shape "
                    f"{list(module.values[origin.outputs[0]].shape)}", n)
    for name, axis in sampled.items():
        shape = module.values[name].shape
        if name in stride or (len(shape) >= 2 and shape[axis] == n):
            module.values[name] = module.values[name].with_shape(
                (*shape[:axis], shape[axis] // n, *shape[axis + 1:]))
    for op in ops:
        if op.kind == "reshape":
            out = op.outputs[0]
            op.attrs["shape"][sampled[out]] = module.values[out].shape[sampled[out]]
        elif op.kind in RECURRENT:
            _one_initial_state(module, op, n)


def _lead_with_one_sample(module: Module) -> None:
    """Each quantized input [A, ..., D] (A > 1: its axis 0 is not a batch) as one sample
    [1, A·..., D] of the same bytes, its quantize's codes reshaped back for its readers;
    each such output's codes likewise, reshaped back by the host after its dequantize."""
    for name in module.inputs:
        ty = module.values[name]
        readers = module.consumers(name)
        if len(ty.shape) < 2 or ty.shape[0] == 1 or not readers \
                or any(r.kind != "quantize" for r in readers):
            continue
        sample = (1, math.prod(ty.shape[:-1]), ty.shape[-1])
        module.values[name] = ty.with_shape(sample)
        for quantize in readers:
            codes = quantize.outputs[0]
            code_type = module.values[codes]
            module.values[codes] = code_type.with_shape(sample)
            back = module.add_op("reshape", [codes], [code_type], name=f"{name}.sequence",
                                 attrs={"shape": list(code_type.shape)}).outputs[0]
            for reader in module.consumers(codes):
                if reader.outputs[0] != back:
                    module.set_inputs(reader, [back if v == codes else v
                                               for v in reader.inputs])
            module.outputs = [back if v == codes else v for v in module.outputs]
    for dequantize in [op for op in module.ops() if op.kind == "dequantize"
                       and op.outputs[0] in module.outputs]:
        codes, result = dequantize.inputs[0], dequantize.outputs[0]
        shape = module.values[codes].shape
        if len(shape) < 2 or shape[0] == 1 or module.is_constant(codes):
            continue
        sample = (1, math.prod(shape[:-1]), shape[-1])
        flat = module.add_op("reshape", [codes], [module.values[codes].with_shape(sample)],
                             name=f"{result}.sample", attrs={"shape": list(sample)})
        module.set_inputs(dequantize, [flat.outputs[0]])
        dequantized = module.fresh_name(f"{result}.sample_dq")
        ty = module.values[result]
        module.rename_value(result, dequantized)
        module.values[dequantized] = ty.with_shape(sample)
        dequantize.attrs["port"] = dequantize.attrs.get("port", result)
        module.add_op("reshape", [dequantized], [ty], name=f"{result}.sequence",
                      outputs=[result], attrs={"shape": list(ty.shape)})
        module.outputs = [result if v == dequantized else v for v in module.outputs]


def _refuse(op: Op, reason: str, n: int) -> None:
    raise CimcError(f"op {op.name!r} ({op.kind}) {reason}; the model has a batch of {n} "
                    "baked into its shapes and cimc compiles one sample at a time, which "
                    "needs every op to keep its samples independent: export the model with "
                    "batch 1")


def _sample_axes(module: Module, op: Op, n: int, sampled: dict[str, int]
                 ) -> tuple[dict[str, int], str | None]:
    """The sample axis of each result of `op` (not a reshape, no operand merged), and why
    `op` mixes the samples (or None). Transposes and recurrent layers move the axis;
    element-wise ops keep it; every other op needs the samples on axis 0."""
    axis = next(sampled[v] for v in op.inputs if v in sampled)
    out = module.values[op.outputs[0]].shape
    if op.kind == "transpose":
        moved = list(op.attrs["perm"]).index(axis)
        return {op.outputs[0]: moved}, None
    if op.kind in RECURRENT:
        layout = int(op.attrs.get("layout", 0))
        if sampled.get(op.inputs[0]) != 1 - layout:
            return {}, "reads the samples on another axis than its batch axis"
        y = 0 if layout else 2  # Y [T, dirs, N, H] (layout 1: [N, T, dirs, H])
        return {v: (y if k == 0 else (0 if layout else 1))
                for k, v in enumerate(op.outputs)}, None
    if op.kind == "matmul":
        return _matmul_axes(module, op, sampled, {})
    if axis and op.kind == "take" and axis in op.attrs["axes"]:
        return {}, "picks along the batch axis"
    if axis and op.kind == "concat" and (
            int(op.attrs["axis"]) % len(out) == axis
            or any(v in module.constants for v in op.inputs)):
        return {}, "joins along the batch axis, or joins a constant to the samples"
    if axis and op.kind in (*KEEPS_AXIS, "take", "concat"):
        for value in op.inputs:
            quant = module.values[value].quant
            shape = module.values[value].shape
            if value in sampled and sampled[value] != axis:
                return {}, "reads samples on two different axes"
            if value in module.constants and len(shape) == len(out) and shape[axis] == n:
                return {}, f"reads constant {value!r} with a value per sample"
            if quant is not None and quant.per_channel and (quant.axis or 0) == axis:
                return {}, "is quantized per sample (per-channel along the batch axis)"
        return {v: axis for v in op.outputs}, None
    if axis:
        return {}, f"reads the samples on axis {axis}"
    reason = _mixes_samples(module, op, n)
    return {v: 0 for v in op.outputs}, reason


def _reshape_axes(module: Module, op: Op, n: int, sampled: dict[str, int],
                  stride: dict[str, int]) -> tuple[dict[str, int], str | None]:
    """Where reshape `op` puts the samples of its operand (on their own axis, or merged
    into one `stride` indices apart): the result's axis holding them as a digit of its
    index, merged too (`stride` gets their step) unless it is an axis of n samples; an
    error when the digit straddles two axes."""
    x, out = op.inputs[0], op.outputs[0]
    shape, result = module.values[x].shape, module.values[out].shape
    block = stride.get(x, 1) * math.prod(shape[sampled[x] + 1:])  # elements between samples
    for k, size in enumerate(result):
        below = math.prod(result[k + 1:])
        if block % below == 0 and (size * below) % (block * n) == 0:
            if size != n or block != below:
                stride[out] = block // below
            return {out: k}, None
    return {}, f"turns the {n} samples into shape {list(result)}"


def _matmul_axes(module: Module, op: Op, sampled: dict[str, int], stride: dict[str, int]
                 ) -> tuple[dict[str, int], str | None]:
    """A matmul keeps the samples on a leading axis (not its matrices' two) that its
    runtime operands share, or on a row axis of its first operand times a constant."""
    rank = len(module.values[op.outputs[0]].shape)
    runtime = [v for v in op.inputs if v not in module.constants]
    placed = {(sampled.get(v, -1), stride.get(v, 0)) for v in runtime}
    if len(placed) != 1 or (-1, 0) in placed:
        return {}, "multiplies samples on different axes"
    axis = placed.pop()[0]
    if any(len(module.values[v].shape) != rank for v in runtime) or axis >= rank - (
            2 if len(runtime) == 2 else 1):
        return {}, f"multiplies along the samples' axis {axis}"
    return {op.outputs[0]: axis}, None


def _merged_axes(module: Module, op: Op, n: int, sampled: dict[str, int],
                 stride: dict[str, int]) -> tuple[dict[str, int], str | None]:
    """The sample axis of `op`'s results (not a reshape) when an operand holds the samples
    merged into an axis (module docstring); `stride` gets the results' that hold them
    merged too."""
    value = next(v for v in op.inputs if v in stride)
    axis, step = sampled[value], stride[value]
    out = op.outputs[0]
    reason = f"mixes the {n} samples merged into axis {axis} of {value!r}"
    if op.kind == "transpose":
        stride[out] = step
        return {out: list(op.attrs["perm"]).index(axis)}, None
    if op.kind in ("matmul", "gemm"):
        axes, why = _matmul_axes(module, op, sampled, stride) if op.kind == "matmul" else (
            ({out: 0}, None) if axis == 0 and len(op.inputs) > 1
            and all(v in module.constants for v in op.inputs[1:]) else ({}, reason))
        stride.update({v: step for v in axes})
        return axes, why and reason
    if op.kind in KEEPS_AXIS:
        rank = len(module.values[out].shape)
        for v in op.inputs:
            shape = module.values[v].shape
            aligned = axis - (rank - len(shape))  # numpy broadcasting aligns the last axes
            if (v in sampled and (sampled[v], stride.get(v)) != (axis, step)) or (
                    v in module.constants and 0 <= aligned and shape[aligned] > 1):
                return {}, reason
            quant = module.values[v].quant
            if quant is not None and quant.per_channel and (quant.axis or 0) == axis:
                return {}, reason
        stride.update({v: step for v in op.outputs})
        return {v: axis for v in op.outputs}, None
    return {}, reason


def _one_initial_state(module: Module, op: Op, n: int) -> None:
    """A recurrent layer's constant initial states [dirs, N, H] (or [N, dirs, H]), the
    same for every sample, as the one sample's."""
    axis = 0 if int(op.attrs.get("layout", 0)) else 1
    inputs = list(op.inputs)
    for k in STATES[:len(inputs) - STATES[0]]:
        value = inputs[k]
        ty = module.values[value]
        if value not in module.constants or ty.shape[axis] != n:
            continue
        data = module.constants[value]
        first = data.take([0], axis=axis)
        if not (data == first).all():
            raise CimcError(f"op {op.name!r} ({op.kind}): initial state {value!r} differs "
                            "from sample to sample; cimc compiles one sample at a time: "
                            "export the model with batch 1")
        inputs[k] = module.add_constant(module.fresh_name(f"{value}.sample"), first, ty.quant)
    module.set_inputs(op, inputs)


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
    if op.kind in ("reduce_mean", "reduce_sum") and \
            0 in [axis(int(a)) for a in op.attrs["axes"]]:
        return "reduces over the batch axis"
    if op.kind == "matmul" and any(v not in module.constants for v in op.inputs[1:]):
        return "multiplies two runtime tensors"
    if op.kind in ELEMENTWISE:
        for value in op.inputs:
            shape = module.values[value].shape
            if value in module.constants and len(shape) == rank and shape[0] == n:
                return f"reads constant {value!r} with a value per sample"
    return None
