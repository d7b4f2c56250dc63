"""Recurrent layers in `lower`: not lowered yet, so named, all of them, in one message.

What lowering them needs (docs/backend.md, "Recurrent layers"): a quantized
lstm or gru (cimc/frontend/recurrent_quant.py) is two matvecs per step (W and R
on crossbars, programmed once), per-gate eltwise adds ending in a lookup table,
products of two 8-bit tensors, and a loop of T steps in the program that feeds
each step's h back to R's crossbar; none of that exists in the code generator yet.
"""

from __future__ import annotations

from cimc.diagnostics import CimcError
from cimc.ir.module import Module

RECURRENT_KINDS = ("lstm", "gru", "rnn")


def refuse_recurrent(module: Module) -> None:
    """One CimcError naming every recurrent op of `module`, with what each lacks."""
    found = []
    for op in module.ops():
        if op.kind not in RECURRENT_KINDS:
            continue
        if module.values[op.outputs[0]].is_quantized:
            found.append(f"{op.name!r} ({op.kind}, quantized, {op.attrs['direction']})")
        else:
            found.append(f"{op.name!r} ({op.kind}, float: onnxruntime's quantizer leaves "
                         "it float; calibration data quantizes an lstm or gru)")
    if found:
        raise CimcError(
            f"the chip does not run recurrent layers yet: op {', op '.join(found)}; lowering "
            "them (W and R on crossbars programmed once, the gates through lookup tables, "
            "the time steps as a loop in the program) is not implemented; the reference "
            "engine runs them (cimc run --engine reference)")
