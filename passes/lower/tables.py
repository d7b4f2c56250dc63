"""Element-wise functions of one tensor, tabulated: the part of `lower` that turns a
quantized `mul`, `add`, `sub` or `div` (or a `lut` of such a step, or of a `relu`,
`clip`, `requantize` or `lut`) whose result is a function of one 8-bit tensor `x` alone
into one `lut` of x.

The op's operands are followed up through element-wise integer ops (`lut`, `relu`,
`clip`, `requantize`, and these four themselves) and one-element constants; when the
only tensor reached is x, the result is a function of the 256 codes of x. HardSwish
and SiLU reach the integer IR that way (onnxruntime's optimizer writes HardSwish as
`x * HardSigmoid(x)`, MobileNetV3 code as `x * clip(x + 3, 0, 6) / 6`; torch exports
SiLU as `x * Sigmoid(x)`), and so do `x * 0.5`, `x + 3` and `x / 6`. The table is the
reference kernels of the ops evaluated on those codes, so the lookup equals the
reference bit for bit by construction. The ops in between stay where something else
reads them; otherwise they die.
"""

from __future__ import annotations

import numpy as np

from cimc.ir.module import Module, Op, TensorType
from cimc.reference import KERNELS, Call

TABULATED = ("mul", "add", "sub", "div")
# Element-wise integer kinds a tabulated op may read through.
THROUGH = (*TABULATED, "lut", "relu", "clip", "requantize")
EIGHT_BIT = ("i8", "u8")


def tabulate_functions_of_one_tensor(module: Module) -> None:
    """Rewrite every tabulable op into a `lut` of its one tensor; drop what dies."""
    changed = False
    for op in list(module.ops()):
        if _composite(module, op) and _tabulate(module, op):
            changed = True
    if changed:
        module.remove_dead()


def _composite(module: Module, op: Op) -> bool:
    """Whether `op` may be a function of more than one element-wise step: a kind of
    TABULATED, or a `lut` of such a step (a lut of a lut is one lut)."""
    if op.kind in TABULATED:
        return True
    producer = module.producer(op.inputs[0]) if op.kind == "lut" else None
    return producer is not None and producer.kind in THROUGH


def _per_tensor_8bit(ty: TensorType) -> bool:
    return ty.dtype in EIGHT_BIT and ty.quant is not None and ty.quant.axis is None


def _leaves(module: Module, value: str, shape: tuple[int, ...],
            memo: dict[str, set[str] | None]) -> set[str] | None:
    """The tensors `value` is an element-wise function of (None: not only of tensors of
    `shape` and one-element constants); stops at a second tensor (then the value is no
    function of one). `memo` holds the values already followed: an unrolled recurrent
    layer's steps all lead back through the same chain."""
    if value in memo:
        return memo[value]
    found: set[str] | None = None
    ty = module.values[value]
    producer = module.producer(value)
    if module.is_constant(value):
        found = set() if ty.size == 1 else None
    elif ty.shape == shape and _per_tensor_8bit(ty):
        if producer is None or producer.kind not in THROUGH:
            found = {value}
        else:
            found = set()
            for v in producer.inputs[:1] if producer.kind == "lut" else producer.inputs:
                leaves = _leaves(module, v, shape, memo)
                if leaves is None:
                    found = None
                    break
                found |= leaves
                if len(found) > 1:
                    break
    memo[value] = found
    return found


def _tabulate(module: Module, op: Op) -> bool:
    shape = module.values[op.outputs[0]].shape
    leaves = _leaves(module, op.outputs[0], shape, {})
    if leaves is None or len(leaves) != 1:
        return False
    (x,) = leaves
    x_type = module.values[x]
    info = np.iinfo(x_type.numpy_dtype)
    codes = np.arange(int(info.min), int(info.max) + 1).astype(x_type.numpy_dtype)
    table = _evaluate(module, op.outputs[0], x, codes, {}).reshape(-1)
    assert table.shape == (256,)
    name = module.add_constant(module.fresh_name(f"{op.name}_table"), table)
    module.set_inputs(op, [x, name])
    op.kind, op.attrs = "lut", {}
    return True


def _evaluate(module: Module, value: str, x: str, codes: np.ndarray,
              done: dict[str, np.ndarray]) -> np.ndarray:
    """What `value` holds when `x` holds `codes`: a one-element constant as a scalar,
    anything else one element per code."""
    if value == x:
        return codes
    if module.is_constant(value):
        return module.constants[value].reshape(())
    if value not in done:
        producer = module.producer(value)
        assert producer is not None
        args = [_evaluate(module, v, x, codes, done) if k == 0 or producer.kind != "lut"
                else module.constants[v] for k, v in enumerate(producer.inputs)]
        result = module.values[value]
        call = Call(op=producer, args=args, types=[module.values[v] for v in producer.inputs],
                    result=TensorType(codes.shape, result.dtype, result.quant))
        done[value] = KERNELS[producer.kind](call)
    return done[value]
