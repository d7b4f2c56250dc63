"""The registry of instruction semantics: one small function per instruction.

A semantic function is `fn(core, operands, element) -> next`: `operands` are
the instruction's field values in table order (a memory operand gives base
register then offset), `element` the type suffix ("i8", "u8", "i32") or None.
It returns None to fall through, a non-negative instruction index to branch,
or HALT / BLOCK. Each is registered under the table's mnemonic without its
type suffix, with the operand names it unpacks, which are checked against
cimc.isa.table so a changed table fails loudly instead of misreading operands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cimc.isa.table import BY_MNEMONIC, TYPE_SUFFIXES, InstructionSpec

HALT = -1  # the core's stream ends
BLOCK = -2  # the core waits (recv, sync); the machine resumes it

Semantic = Callable[[Any, tuple[int, ...], Any], "int | None"]
SEMANTICS: dict[str, Semantic] = {}
_OPERANDS: dict[str, tuple[str, ...]] = {}


def semantic(name: str, operands: str = "") -> Callable[[Semantic], Semantic]:
    """Register `fn` as the meaning of instruction `name` (no type suffix)."""

    def register(fn: Semantic) -> Semantic:
        SEMANTICS[name] = fn
        _OPERANDS[name] = tuple(operands.split())
        return fn

    return register


def base_name(mnemonic: str) -> str:
    """`vadd.i8` -> `vadd`, `mvm.acc.u8` -> `mvm.acc`, `halt` -> `halt`."""
    head, _, last = mnemonic.rpartition(".")
    return head if head and last in TYPE_SUFFIXES else mnemonic


def lookup(spec: InstructionSpec) -> Semantic:
    """The semantic function of an instruction; KeyError names what exists."""
    name = base_name(spec.mnemonic)
    if name not in SEMANTICS:
        known = ", ".join(sorted(SEMANTICS))
        raise KeyError(f"the simulator has no semantics for '{spec.mnemonic}' (it knows {known})")
    return SEMANTICS[name]


def check_registry() -> list[str]:
    """Mismatches between the registry and cimc.isa.table (empty when they agree)."""
    problems = []
    for mnemonic, spec in sorted(BY_MNEMONIC.items()):
        name = base_name(mnemonic)
        if name not in SEMANTICS:
            problems.append(f"{mnemonic}: no semantics")
            continue
        want = tuple(op.name for op in spec.operands)
        if _OPERANDS[name] != want:
            problems.append(f"{mnemonic}: semantics unpack {_OPERANDS[name]}, table has {want}")
    return problems
