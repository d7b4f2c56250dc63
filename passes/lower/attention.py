"""The matrix product of two activations (attention's Q·Kᵀ and attn·V): the part of
`lower` that makes a quantized `matmul` of two runtime token tensors the vector unit's
`dot` (no weights to keep in crossbars).

`dot(a, b)` {za, zb, M, shift, zy, lo, hi, rows} with a [1,M,K] (or [M,K]) computes
`acc[m, n] = Σ_k (a[m,k] - za)(b[k,n] - zb)` exactly in int32 and requantizes it with
`m = sa · sb / sy` (docs/ir.md, "matmul"). The chip multiplies two pixels' channel
vectors element by element and sums them (`vmul.i32`, `vredsum.i32`), so it wants b with
the output columns n as its pixels: `rows = 1` when b is given as [1,N,K] (a
`transpose` of the last two axes in front of the matmul, as torch exports `q @ k.T`, is
read through and dies), `rows = 0` for b as [1,K,N] (attn·V: the code transposes b's
centered values in local memory first). With K ≤ 33025, |acc| < 2^31: no saturation.
"""

from __future__ import annotations

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op
from cimc.passes.lower.common import product_attrs, replace

# 255² · K stays below 2^31.
MAX_DEPTH = (2**31 - 1) // (255 * 255)


def _swaps_last_two(module: Module, op: Op | None) -> bool:
    """Whether `op` is an integer transpose of the last two axes that keeps its operand's
    quantization and is read only by matmuls (as their second operand)."""
    if op is None or op.kind != "transpose":
        return False
    x_type, y_type = module.values[op.inputs[0]], module.values[op.outputs[0]]
    rank = len(x_type.shape)
    perm = [int(p) for p in op.attrs["perm"]]
    readers = module.consumers(op.outputs[0])
    return (rank >= 2 and perm == [*range(rank - 2), rank - 1, rank - 2]
            and y_type.is_quantized and x_type.quant == y_type.quant
            and x_type.dtype == y_type.dtype and op.outputs[0] not in module.outputs
            and bool(readers) and all(r.kind == "matmul" and r.inputs[1] == op.outputs[0]
                                      and r.inputs[0] != op.outputs[0] for r in readers))


def fuse_transposed_operands(module: Module) -> None:
    """matmul(a, transpose(b)) -> dot(a, b) {rows = 1}, before `lower` checks what the
    chip can run (a transpose alone it cannot)."""
    for transpose in [op for op in module.ops() if _swaps_last_two(module, op)]:
        source = transpose.inputs[0]
        for matmul in module.consumers(transpose.outputs[0]):
            if module.values[matmul.outputs[0]].is_quantized:
                module.set_inputs(matmul, [matmul.inputs[0], source])
                _lower_dot(module, matmul, rows=True)
        if not module.consumers(transpose.outputs[0]):
            module.remove_op(transpose)


def lower_matmul(module: Module, op: Op) -> None:
    """A quantized matmul of two runtime tensors, b as [1,K,N] -> dot {rows = 0}."""
    _lower_dot(module, op, rows=False)


def _lower_dot(module: Module, op: Op, rows: bool) -> None:
    a, b = op.inputs
    a_type, b_type, y_type = (module.values[v] for v in (a, b, op.outputs[0]))
    if any(module.is_constant(v) for v in (a, b)):
        raise CimcError(f"op {op.name!r} (matmul): a matmul by a constant is a gemm "
                        "(canonicalize); this one reads a constant it could not make one")
    shapes = [tuple(t.shape) for t in (a_type, b_type, y_type)]
    if any(len(s) != len(shapes[0]) or len(s) not in (2, 3) or (len(s) == 3 and s[0] != 1)
           for s in shapes):
        raise CimcError(f"op {op.name!r} (matmul): the chip multiplies two token matrices "
                        f"[1,T,D] or [T,D] of one rank, not {' x '.join(map(str, shapes[:2]))}")
    depth = a_type.shape[-1]
    if depth > MAX_DEPTH:
        raise CimcError(f"op {op.name!r} (matmul): {depth} products per sum could leave "
                        f"int32; the chip sums at most {MAX_DEPTH}")
    attrs = {**product_attrs(op, a_type, b_type, y_type), "rows": int(rows)}
    replace(module, op, "dot", [a, b], attrs)
