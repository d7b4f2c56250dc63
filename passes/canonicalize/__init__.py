"""canonicalize: bring an imported module to the canonical form later passes expect.

The pass is a list of small named rewrites, (op kind, function) pairs applied
until none fires, then dead ops and constants are removed. Afterwards:
  - no `batch_norm`, `sum` or `identity` remain (batch norms fold into the
    conv/gemm before them or become a per-channel `mul` + `add`);
  - per-channel multiplications and additions by constants after a float
    conv/gemm are folded into its weights and bias; chains of them merge;
  - `gemm` is `gemm(x, w[N,K], b[N]?)` without ONNX's transposes and scales;
    `matmul` by a constant matrix (or a dequantized integer one) is a `gemm`;
  - reshapes have concrete shapes, no-op reshapes and transposes are gone,
    chains of reshapes are one reshape;
  - `reduce_mean` over H and W is `global_avg_pool`;
  - a `quantize` of a float constant is the constant of its codes;
  - `conv_transpose` is zero insertion (a `take`) and a conv (resample.py);
  - a linear `resize` of dequantized codes by integer scales whose weights are
    k / 2^7 is a depthwise `conv_transpose` of the codes with their edges repeated.
Quantize/dequantize pairs are never folded through: a QDQ weight stays
`dequantize(integer constant)`, transposed as an integer when gemm needs it.

The rewrites live by theme in the modules cleanup, affine and gemm of this
package (edits: what they share); PATTERNS below is the order they are tried in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from cimc.ir.module import Module, Op
from cimc.pass_base import Pass
from cimc.passes.canonicalize.affine import (
    fold_batch_norm,
    fold_channel_add,
    fold_channel_mul,
    merge_affine_chain,
    sub_to_add,
)
from cimc.passes.canonicalize.cleanup import (
    concrete_reshape,
    drop_identity,
    drop_identity_transpose,
    global_mean,
    quantize_constant,
    sum_to_adds,
)
from cimc.passes.canonicalize.gemm import matmul_to_gemm, normalize_gemm
from cimc.passes.canonicalize.resample import (
    conv_transpose_to_conv,
    linear_resize_to_conv_transpose,
)

Rewrite = Callable[[Module, Op], bool]

PATTERNS: list[tuple[str, Rewrite]] = [
    ("identity", drop_identity),
    ("sum", sum_to_adds),
    ("batch_norm", fold_batch_norm),
    ("sub", sub_to_add),
    ("mul", fold_channel_mul),
    ("add", fold_channel_add),
    ("mul", merge_affine_chain),
    ("add", merge_affine_chain),
    ("reshape", concrete_reshape),
    ("transpose", drop_identity_transpose),
    ("reduce_mean", global_mean),
    ("gemm", normalize_gemm),
    ("matmul", matmul_to_gemm),
    ("quantize", quantize_constant),
    ("conv_transpose", conv_transpose_to_conv),
    ("resize", linear_resize_to_conv_transpose),
]


@dataclass
class Canonicalize(Pass):
    """Apply PATTERNS to a fixed point, then remove dead ops and constants."""

    name: ClassVar[str] = "canonicalize"

    def apply(self, module: Module) -> None:
        changed = True
        while changed:
            changed = False
            for op in list(module.ops()):
                if op.name not in module.graph:
                    continue  # removed by an earlier rewrite in this sweep
                for kind, rewrite in PATTERNS:
                    if op.kind == kind and rewrite(module, op):
                        changed = True
                        break
            prune(module)


def prune(module: Module) -> None:
    """Remove ops nobody reads (rewrites leave them behind) and unread constants.

    Module.remove_dead does the same with a scan per op; reading the graph's
    out-degrees keeps this linear, which matters for models of a thousand ops.
    """
    for op in reversed(list(module.ops())):
        if module.graph.out_degree(op.name) == 0 and not set(op.outputs) & set(module.outputs):
            module.remove_op(op)
    read = {value for op in module.ops() for value in op.inputs} | set(module.outputs)
    for name in [c for c in module.constants if c not in read]:
        del module.constants[name]
        del module.values[name]
