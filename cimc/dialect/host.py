"""The host's share of a lowered module and the ports between host and chip.

The host quantizes each model input once (the program's `.input`), dequantizes
the chip's results (its `.output`s) and runs the float tail after the last
`dequantize`; the chip runs everything between. `lower` (passes/lower/,
passes/lower/host.py) checks and arranges that boundary; emission, the host's
side (cimc/host/) and the report read it through the functions here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.module import Module, Op

# Kinds the host runs around the program.
HOST_KINDS = ("quantize", "dequantize")


def input_quantize(module: Module, name: str) -> Op | None:
    """The `quantize` of model input `name` (the program reads its codes), if any."""
    if name not in module.inputs:
        return None
    return next((op for op in module.consumers(name) if op.kind == "quantize"), None)


def host_float_ops(module: Module) -> set[str]:
    """The float tail the host runs after the chip: ops fed (transitively) only by
    `dequantize` results whose results feed only each other or the module's outputs
    (a Softmax, maybe quantized, reshaped and dequantized again). A float op whose result goes
    back to integer ops is not host work: it sits between chip layers."""
    found: set[str] = set()
    for op in module.ops():
        ins = [module.producer(v) for v in op.inputs if not module.is_constant(v)]
        if op.kind == "dequantize":
            if ins and all(p is not None and p.name in found for p in ins):
                found.add(op.name)
            continue
        integer = op.kind != "quantize" and module.values[op.outputs[0]].is_quantized
        # A reshape of codes the host made (a Softmax's result quantized, then put back to
        # the model's output shape) moves no number: the host does it too.
        tail = integer and op.kind == "reshape" and all(p is not None and p.name in found
                                                        for p in ins)
        if (tail or not integer) and ins and all(p is not None and (p.kind == "dequantize" or
                                                                    p.name in found)
                                                 for p in ins):
            found.add(op.name)
    for op in reversed(list(module.ops())):
        readers = [c for v in op.outputs for c in module.consumers(v)]
        if op.name in found and any(c.name not in found for c in readers):
            found.discard(op.name)
    return found


def chip_stores(module: Module, value: str) -> bool:
    """Whether the chip stores `value` in global memory for the host: a `dequantize`
    reads it, directly or through a view (a program output); in the module of one
    phase of a model run in phases (cimc/dialect/phased.py), also when a later phase
    reads it (the phase's outputs)."""
    values = [value] + [c.outputs[0] for c in module.consumers(value) if c.kind == "view"]
    return any(v in module.outputs for v in values) or any(
        c.kind == "dequantize" for v in values for c in module.consumers(v))


@dataclass(frozen=True)
class Port:
    """A quantized tensor the host writes or reads: program name and IR value."""

    name: str
    value: str


def ports(module: Module) -> tuple[list[Port], list[Port]]:
    """The program's inputs (quantized module inputs) and outputs (dequantized results of
    the chip, named after the model output or the `dequantize`'s `port`; a `dequantize` of
    a host-side `quantize`, as after a float Softmax tail, or of a constant, as the weights
    of a float Gemm tail, stays with the host). A model input that is also a model output
    is an output too: its codes, which `lower` has the chip copy (`pass_through_inputs`)."""
    inputs = [Port(op.inputs[0], op.outputs[0]) for op in module.ops()
              if op.kind == "quantize" and op.inputs[0] in module.inputs]
    host = host_float_ops(module)
    outputs = []
    for op in module.ops():
        if op.kind != "dequantize" or module.is_constant(op.inputs[0]):
            continue
        producer = module.producer(op.inputs[0])
        if producer is None or producer.name not in host:
            outputs.append(Port(op.attrs.get("port", op.outputs[0]), op.inputs[0]))
    for name in module.outputs:
        quantize = input_quantize(module, name)
        if quantize is not None and all(p.name != name for p in outputs):
            outputs.append(Port(name, quantize.outputs[0]))
    return inputs, outputs
