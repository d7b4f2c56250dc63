"""Recurrent results moved before they are dequantized: the part of `fold-qdq` that
rewrites a chain of float layout ops reading the `dequantize` of a quantized lstm or
gru (cimc quantizes those layers itself and dequantizes their results for the float
ops that read them, which onnxruntime's quantizer left float with the layer: the
reshape and transpose into the [1, T, H] tokens a mean over time reads) as the same
ops on the integer codes, then one `dequantize`: per-tensor quantization is
element-wise, so moving codes and dequantizing equals dequantizing and moving values,
and the op reading the chain sees a dequantized integer, the pattern fold-qdq folds.
A chain ending in a `quantize` is left as it is (fold-qdq folds it whole), and so is
one a float op reads that nothing quantizes (the host's float tail)."""

from __future__ import annotations

from cimc.ir.module import Module, Op

# Layout ops that move every element unchanged (a take that fills is not one: its fill
# is a value).
MOVES = ("reshape", "transpose", "take")
# The layers cimc quantizes itself (cimc/frontend/recurrent_quant.py), whose readers
# onnxruntime's quantizer left float, and the layout ops joining their directions.
RECURRENT = ("lstm", "gru")
JOINS = ("concat", "reshape", "transpose")


def _moves(op: Op) -> bool:
    return op.kind in MOVES and (op.kind != "take" or min(op.attrs["index"]) >= 0)


def _recurrent(module: Module, value: str) -> bool:
    """Whether `value` is a recurrent layer's result, or made of them by layout ops."""
    producer = module.producer(value)
    if producer is None:
        return False
    if producer.kind in RECURRENT:
        return True
    return producer.kind in JOINS and any(_recurrent(module, v) for v in producer.inputs
                                          if not module.is_constant(v))


def _chain(module: Module, move: Op) -> list[Op]:
    """`move` and the moves below it that are each the sole reader of the one above."""
    chain = [move]
    while True:
        value = chain[-1].outputs[0]
        readers = module.consumers(value)
        if value in module.outputs or len(readers) != 1 or not _moves(readers[0]):
            return chain
        chain.append(readers[0])


def _quantized(module: Module, op: Op) -> bool:
    """Whether `op` is not a move and only a `quantize` reads its result (the pattern
    fold-qdq folds once its operand is a dequantized integer)."""
    value = op.outputs[0]
    readers = module.consumers(value)
    return op.kind not in (*MOVES, "quantize") and value not in module.outputs and \
        bool(readers) and all(r.kind == "quantize" for r in readers)


def dequantize_after_moves(module: Module) -> None:
    """Every float chain of moves reading a per-tensor 8-bit `dequantize` of a recurrent
    layer's result and read by ops that are quantized (not a float tail the host runs;
    not a chain ending in a `quantize`, which fold-qdq folds whole), as integer moves
    then a `dequantize`."""
    for dequantize in [op for op in module.ops() if op.kind == "dequantize"]:
        if not _recurrent(module, dequantize.inputs[0]):
            continue
        codes = module.values[dequantize.inputs[0]]
        if codes.quant is None or codes.quant.axis is not None or \
                codes.dtype not in ("i8", "u8"):
            continue
        for reader in module.consumers(dequantize.outputs[0]):
            if not _moves(reader):
                continue
            chain = _chain(module, reader)
            end = chain[-1].outputs[0]
            readers = module.consumers(end)
            if end in module.outputs or not readers or \
                    not all(_quantized(module, r) for r in readers):
                continue
            value = dequantize.inputs[0]
            for op in chain:
                shape = module.values[op.outputs[0]].shape
                value = module.add_op(op.kind, [value], [codes.with_shape(shape)],
                                      name=module.fresh_name(op.name),
                                      attrs=dict(op.attrs)).outputs[0]
            moved = module.add_op("dequantize", [value], [module.values[end]],
                                  name=module.fresh_name(dequantize.name))
            module.replace_uses(end, moved.outputs[0])
            for op in reversed(chain):
                module.remove_op(op)
