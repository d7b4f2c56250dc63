"""Element-wise functions of one tensor, tabulated: the part of `lower` that turns a
quantized `mul`, `add` or `sub` whose operands are all a function of one 8-bit tensor
`x` (x itself, a `lut` of x, or a one-element constant) into one `lut` of x.

HardSwish and SiLU reach the integer IR as products of x and an activation of x
(onnxruntime's optimizer writes HardSwish as `x * HardSigmoid(x)`; torch exports SiLU
as `x * Sigmoid(x)`), and `x * 0.5` or `x + 3` as products and sums with scalars. Each is
a function of the 256 codes of x, so its table is the op's own reference kernel
evaluated on those codes: the lookup equals the reference bit for bit by construction.
"""

from __future__ import annotations

import numpy as np

from cimc.ir.module import Module, Op, TensorType
from cimc.reference import KERNELS, Call

TABULATED = ("mul", "add", "sub")


def tabulate_functions_of_one_tensor(module: Module) -> None:
    """Rewrite every tabulable op into a `lut` of its one tensor; drop what dies."""
    changed = False
    for op in list(module.ops()):
        if op.kind in TABULATED and _tabulate(module, op):
            changed = True
    if changed:
        module.remove_dead()


def _source(module: Module, value: str) -> str:
    """The tensor `value` is a function of: the operand of a `lut`, else itself."""
    producer = module.producer(value)
    if producer is not None and producer.kind == "lut":
        return producer.inputs[0]
    return value


def _tabulate(module: Module, op: Op) -> bool:
    result = module.values[op.outputs[0]]
    if not result.is_quantized or result.dtype not in ("i8", "u8") or \
            any(module.values[v].quant is None or module.values[v].quant.axis is not None
                for v in [*op.inputs, op.outputs[0]]):
        return False
    runtime = [v for v in op.inputs if not module.is_constant(v)]
    if not runtime or any(module.values[v].size != 1 for v in op.inputs
                          if module.is_constant(v)):
        return False
    sources = {_source(module, v) for v in runtime}
    if len(sources) != 1:
        return False
    (x,) = sources
    x_type = module.values[x]
    if x_type.dtype not in ("i8", "u8") or module.is_constant(x) or \
            x_type.shape != result.shape:
        return False
    info = np.iinfo(x_type.numpy_dtype)
    codes = np.arange(int(info.min), int(info.max) + 1).astype(x_type.numpy_dtype)
    args = [_values(module, v, x, codes) for v in op.inputs]
    types = [module.values[v] for v in op.inputs]
    call = Call(op=op, args=args, types=types,
                result=TensorType(np.broadcast_shapes(*(a.shape for a in args)),
                                  result.dtype, result.quant))
    table = KERNELS[op.kind](call).reshape(-1)
    name = module.add_constant(module.fresh_name(f"{op.name}_table"), table)
    module.set_inputs(op, [x, name])
    op.kind, op.attrs = "lut", {}
    return True


def _values(module: Module, value: str, x: str, codes: np.ndarray) -> np.ndarray:
    """What operand `value` holds when `x` holds `codes` (one per code)."""
    if module.is_constant(value):
        return module.constants[value].reshape(())
    if value == x:
        return codes
    producer = module.producer(value)
    assert producer is not None and producer.kind == "lut"
    table = module.constants[producer.inputs[1]]
    return table.astype(module.values[value].numpy_dtype)[
        codes.astype(np.int64) - int(np.iinfo(codes.dtype).min)]
