"""Semantics of scalar, branch and synchronization instructions.

Registers are Python ints holding int64 values; r0 reads as 0 and ignores
writes. Arithmetic wraps modulo 2^64 like the hardware's 64-bit adders.
"""

from __future__ import annotations

from typing import Any

from cimc.isa.simulator.registry import HALT, semantic

_MASK = (1 << 64) - 1
_SIGN = 1 << 63


def _wrap(value: int) -> int:
    return ((value + _SIGN) & _MASK) - _SIGN


@semantic("halt")
def halt(core: Any, o: tuple[int, ...], t: Any) -> int:
    return HALT


@semantic("sync")
def sync(core: Any, o: tuple[int, ...], t: Any) -> int | None:
    return core.machine.arrive_at_barrier(core)


@semantic("li", "rd imm")
def li(core: Any, o: tuple[int, ...], t: Any) -> None:
    if o[0]:
        core.regs[o[0]] = o[1]


@semantic("addi", "rd rs imm")
def addi(core: Any, o: tuple[int, ...], t: Any) -> None:
    if o[0]:
        core.regs[o[0]] = _wrap(core.regs[o[1]] + o[2])


@semantic("add", "rd rs rt")
def add(core: Any, o: tuple[int, ...], t: Any) -> None:
    if o[0]:
        r = core.regs
        r[o[0]] = _wrap(r[o[1]] + r[o[2]])


@semantic("sub", "rd rs rt")
def sub(core: Any, o: tuple[int, ...], t: Any) -> None:
    if o[0]:
        r = core.regs
        r[o[0]] = _wrap(r[o[1]] - r[o[2]])


@semantic("mul", "rd rs rt")
def mul(core: Any, o: tuple[int, ...], t: Any) -> None:
    if o[0]:
        r = core.regs
        r[o[0]] = _wrap(r[o[1]] * r[o[2]])


@semantic("jmp", "target")
def jmp(core: Any, o: tuple[int, ...], t: Any) -> int:
    return o[0]


@semantic("bne", "rs rt target")
def bne(core: Any, o: tuple[int, ...], t: Any) -> int | None:
    r = core.regs
    return o[2] if r[o[0]] != r[o[1]] else None


@semantic("blt", "rs rt target")
def blt(core: Any, o: tuple[int, ...], t: Any) -> int | None:
    r = core.regs
    return o[2] if r[o[0]] < r[o[1]] else None
