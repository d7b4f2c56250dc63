"""Model inputs reshaped before they are quantized: the part of `fold-qdq` that moves
the reshape of the tokens [1, T, D] -> [T, D] in front of a sequence model's first gemm
(canonicalize's MatMul) behind the input's `quantize`, so that the host quantizes the
input as it is and the chip reads the codes through a view."""

from __future__ import annotations

from cimc.ir.module import Module


def quantize_before_reshape(module: Module) -> None:
    """A float reshape of a model input read only by `quantize` ops (the reshape to
    [T, D] in front of the first gemm) changes places with them: the host quantizes the
    input in its own shape and the chip views the codes in the reshape's (quantization
    is element-wise, so both orders give the same codes)."""
    for name in list(module.inputs):
        for reshape in [op for op in module.consumers(name) if op.kind == "reshape"]:
            readers = module.consumers(reshape.outputs[0])
            if not readers or reshape.outputs[0] in module.outputs or \
                    any(op.kind != "quantize" for op in readers):
                continue
            first = readers[0]
            codes = module.values[first.outputs[0]]
            if any(module.values[op.outputs[0]] != codes for op in readers[1:]):
                continue
            quantize = module.add_op("quantize", [name],
                                     [codes.with_shape(module.values[name].shape)],
                                     name=module.fresh_name(f"{first.name}.input"))
            view = module.add_op("reshape", [quantize.outputs[0]], [codes],
                                 name=module.fresh_name(reshape.name), attrs=dict(reshape.attrs))
            for op in readers:
                module.replace_uses(op.outputs[0], view.outputs[0])
                module.remove_op(op)
            module.remove_op(reshape)
