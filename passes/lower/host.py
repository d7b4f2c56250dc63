"""The host's share of a lowered module (cimc/dialect/host.py), which `lower` checks
and arranges: the host quantizes each model input once (the program's `.input`),
dequantizes the chip's results (its `.output`s) and runs the float tail after the
last `dequantize`; the chip runs everything between."""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.dialect.host import HOST_KINDS, input_quantize
from cimc.ir.module import Module, Op


def check_host_boundary(module: Module, chip: set[str]) -> None:
    """The host quantizes the model's inputs and dequantizes its results: the chip ops
    (`chip`, by name) read no model input and produce no model output themselves."""
    for name in module.inputs:
        for op in module.consumers(name):
            if op.name in chip:
                raise CimcError(
                    f"model input {name!r} is {module.values[name].dtype} and op {op.name!r} "
                    f"({op.kind}) reads it without a QuantizeLinear; the backend takes float "
                    "inputs and quantizes them on the host: give the model a float input "
                    "followed by QuantizeLinear")
    for name in module.outputs:
        producer = module.producer(name)
        if producer is not None and producer.name in chip:
            raise CimcError(
                f"model output {name!r} is the {module.values[name].dtype} result of op "
                f"{producer.name!r} ({producer.kind}) with no DequantizeLinear after it; the "
                "backend returns results through the host's dequantization: add a "
                "DequantizeLinear to the model's output")


def quantize_inputs_once(module: Module) -> None:
    """The program reads one quantized copy of each model input (its `.input` port): equal
    `quantize` ops of one input merge; different ones are reported."""
    for name in module.inputs:
        quantizes = [op for op in module.consumers(name) if op.kind == "quantize"]
        first = quantizes[0] if quantizes else None
        for other in quantizes[1:]:
            assert first is not None
            if module.values[other.outputs[0]] == module.values[first.outputs[0]]:
                module.replace_uses(other.outputs[0], first.outputs[0])
                module.remove_op(other)
                continue
            found = ", ".join(f"{op.name!r} (scale {q.scale[0]:g}, zero point {q.zero_point[0]})"
                              for op in (first, other)
                              if (q := module.values[op.outputs[0]].quant) is not None)
            raise CimcError(f"model input {name!r} is quantized twice, differently: {found}; "
                            "the program reads one quantized copy of each input, so quantize "
                            "it once and requantize where another scale is needed")


def pass_through_inputs(module: Module) -> None:
    """A model input that is also a model output: the chip copies its codes (an identity
    `rescale`) to a program output, dequantized by the host as any other; the `port`
    attribute of that `dequantize` keeps the model's name for it."""
    for i, name in enumerate(module.outputs):
        if name not in module.inputs:
            continue
        quantize = input_quantize(module, name)
        if quantize is None:
            raise CimcError(f"model output {name!r} is a model input that no quantize reads, "
                            "so the program has no codes of it; quantize it (QDQ) or take it "
                            "off the model's outputs (the host has it anyway)")
        codes = module.values[quantize.outputs[0]]
        if codes.quant is None or codes.quant.per_channel:
            raise CimcError(f"op {quantize.name!r} (quantize): the input must be quantized "
                            "per tensor")
        zx = int(codes.quant.zero_point[0])
        info = np.iinfo(codes.numpy_dtype)
        lo, hi = int(info.min), int(info.max)
        copy = module.add_op("rescale", [quantize.outputs[0]], [codes], name=f"{name}.copy",
                             attrs={"zx": zx, "M": 0, "shift": 0, "zy": zx, "lo": lo, "hi": hi})
        out = module.add_op("dequantize", [copy.outputs[0]], [module.values[name]],
                            name=f"{name}.out", attrs={"port": name})
        module.outputs[i] = out.outputs[0]


def after_quantize(module: Module, op: Op) -> bool:
    """Whether a `quantize` op comes before `op` (it reads a chip result, directly or
    through other ops), rather than `op` working on the float model input."""
    seen: set[str] = set()
    work = [module.producer(v) for v in op.inputs]
    while work:
        producer = work.pop()
        if producer is None or producer.name in seen:
            continue
        if producer.kind == "quantize":
            return True
        seen.add(producer.name)
        work.extend(module.producer(v) for v in producer.inputs)
    return False


def feeds_chip(module: Module, op: Op) -> bool:
    """Whether an integer op (not the host's quantize/dequantize) reads `op`'s result,
    directly or through other ops."""
    seen: set[str] = set()
    work = [c for v in op.outputs for c in module.consumers(v)]
    while work:
        reader = work.pop()
        if reader.name in seen:
            continue
        seen.add(reader.name)
        if reader.kind not in HOST_KINDS and module.values[reader.outputs[0]].is_quantized:
            return True
        work += [c for v in reader.outputs for c in module.consumers(v)]
    return False
