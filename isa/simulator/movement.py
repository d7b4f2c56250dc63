"""Semantics of data movement: local copies, global loads/stores, network messages.

`copy` reads all its source bytes before writing any (overlapping blocks see
the old contents). ld/st, send and recv also take time that depends on other
cores (shared global bandwidth, network links, message arrival), which the
machine accounts.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from cimc.isa.simulator.registry import semantic

Ops = tuple[int, ...]


@lru_cache(maxsize=4096)  # a program copies the same window shapes over and over
def _blocks(reps: int, length: int, stride: int) -> np.ndarray:
    """Byte indices of `reps` blocks of `length` bytes, `stride` apart (read-only)."""
    index = (np.arange(reps)[:, None] * stride + np.arange(length)[None, :]).ravel()
    index.flags.writeable = False
    return index


@semantic("copy", "dst src len reps dst_stride src_stride")
def copy(core: Any, o: Ops, t: Any) -> None:
    regs, memory = core.regs, core.memory
    dst, src = regs[o[0]] + o[1], regs[o[2]] + o[3]
    length, reps, dst_stride, src_stride = o[4], o[5], o[6], o[7]
    if not length or not reps:
        return
    # Byte views of the pages where they hold the range (Memory.elements), as for vectors.
    if src_stride == length or reps == 1:
        data = memory.elements(src, length * reps, "u8")
    else:
        span = memory.elements(src, (reps - 1) * src_stride + length, "u8")
        data = span[:, _blocks(reps, length, src_stride)]
    if dst_stride == length or reps == 1:
        memory.put(dst, data, "u8")
    else:
        region = memory.elements(dst, (reps - 1) * dst_stride + length, "u8").copy()
        region[:, _blocks(reps, length, dst_stride)] = data
        memory.put(dst, region, "u8")


@semantic("fill", "dst value len")
def fill(core: Any, o: Ops, t: Any) -> None:
    if o[3]:
        core.memory.write(core.regs[o[0]] + o[1], np.full(o[3], o[2] & 0xFF, dtype=np.uint8))


@semantic("ld", "dst src len")
def ld(core: Any, o: Ops, t: Any) -> None:
    machine = core.machine
    data = machine.global_memory.read(core.regs[o[2]] + o[3], o[4])
    core.memory.write(core.regs[o[0]] + o[1], data)
    machine.access_global(core, o[4])


@semantic("st", "dst src len")
def st(core: Any, o: Ops, t: Any) -> None:
    machine = core.machine
    data = core.memory.read(core.regs[o[2]] + o[3], o[4])
    machine.global_memory.write(core.regs[o[0]] + o[1], data)
    machine.access_global(core, o[4])


@semantic("send", "core src len tag")
def send(core: Any, o: Ops, t: Any) -> None:
    data = core.memory.read(core.regs[o[1]] + o[2], o[3]).copy()
    core.machine.send(core, o[0], data, o[4])


@semantic("recv", "core dst len tag")
def recv(core: Any, o: Ops, t: Any) -> int | None:
    return core.machine.receive(core, o[0], core.regs[o[1]] + o[2], o[3], o[4])
