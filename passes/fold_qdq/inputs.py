"""Model inputs moved before they are quantized: the part of `fold-qdq` that moves the
layout ops a model applies to its float input (the reshape of the tokens [1, T, D] ->
[T, D] in front of a sequence model's first gemm; the transpose of time-major features
[N, T, F] -> [N, F, T] and the pad in front of a Conv1d, which onnxruntime's quantizer
leaves float, its first QuantizeLinear after them) behind the input's `quantize`, so
that the host quantizes the input as it is and the chip moves the codes."""

from __future__ import annotations

from cimc.ir.module import Module

# Layout ops that move elements unchanged: quantizing after them or before is the same
# (per-tensor quantization is element-wise; a pad's fill is a value its take quantizes).
MOVES = ("reshape", "transpose", "take")


def _input_moved(module: Module, value: str) -> bool:
    """Whether float `value` is a model input, or one moved by layout ops only."""
    producer = module.producer(value)
    while producer is not None and producer.kind in MOVES:
        value = producer.inputs[0]
        producer = module.producer(value)
    return value in module.inputs and not module.values[value].is_quantized


def quantize_before_reshape(module: Module) -> None:
    """A float layout op of a model input read only by alike per-tensor `quantize` ops
    changes places with them, from the last op of a chain up: the host quantizes the input
    in its own shape and the chip moves the codes."""
    changed = True
    while changed:
        changed = False
        for op in list(module.ops()):
            if op.kind not in MOVES or not _input_moved(module, op.inputs[0]):
                continue
            readers = module.consumers(op.outputs[0])
            if not readers or op.outputs[0] in module.outputs or \
                    any(r.kind != "quantize" for r in readers):
                continue
            codes = module.values[readers[0].outputs[0]]
            if codes.quant is None or codes.quant.axis is not None or \
                    any(module.values[r.outputs[0]] != codes for r in readers[1:]):
                continue
            source = op.inputs[0]
            quantize = module.add_op("quantize", [source],
                                     [codes.with_shape(module.values[source].shape)],
                                     name=module.fresh_name(f"{readers[0].name}.input"))
            moved = module.add_op(op.kind, [quantize.outputs[0]], [codes],
                                  name=module.fresh_name(op.name), attrs=dict(op.attrs))
            for reader in readers:
                module.replace_uses(reader.outputs[0], moved.outputs[0])
                module.remove_op(reader)
            module.remove_op(op)
            changed = True
