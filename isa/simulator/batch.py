"""Counted loops of elementwise vector instructions, all iterations at once.

A translated loop (blocks.py) still calls a semantic function per vector
instruction per iteration, and at a small batch that is mostly numpy's cost
per call. A loop whose body holds only scalar instructions, its branch and
elementwise vector instructions (vector.ELEMENTWISE) first runs its scalar
part alone (`scan`, translated beside the block): the registers, the number
of iterations within the step budget, and each vector operand's address in
every iteration. When the iterations cannot see each other's results, each
instruction is then worked out once, over all iterations, as one array
operation on [batch, iterations, n], with the values its semantic function
gives (vector.binary_values / immediate_values, the one definition):

- no byte an instruction writes is read by any instruction of the loop, nor
  written by another one, so the order of the operations does not matter;
  an instruction writes one place in every iteration (the last iteration's
  values stay) or places that do not overlap;
- every access falls inside the memory and in one page of it (otherwise the
  loop runs one iteration at a time, and a fault is reported where it
  happens);
- no MVM result in flight becomes ready after the loop starts, so no
  iteration would wait: the clock advances by the iterations' static cycles.

Otherwise the loop runs as translated, one iteration at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cimc.isa.simulator.memory import ELEMENT_DTYPES
from cimc.isa.simulator.vector import binary_values, immediate_values

# One vector instruction of the loop: (layout, function, element type, count, immediate),
# layout as in vector.ELEMENTWISE ("dst a b n" or "dst src imm n").
Step = tuple[str, Any, str, int, int]
# scan(core, budget, most iterations) -> (iterations, next pc, written registers' values,
# each instruction's operand addresses [dst, sources...] per iteration)
Scan = Callable[[Any, int, int],
                tuple[int, int, tuple[int, ...], tuple[tuple[list[int], ...], ...]]]

# Elements of one [batch, iterations, n] operand at most: a longer loop runs as several
# batches (the machine enters it again), so its arrays stay a few MB at any batch.
_ELEMENTS = 1 << 19


def run_loop(core: Any, clock: int, budget: int, scan: Scan, steps: tuple[Step, ...],
             written: tuple[int, ...], start: int, end: int, cycles: int,
             ) -> tuple[int, int, int] | None:
    """Run the loop [start, end) whole, as the block would: (next pc, clock, budget left);
    None (nothing changed) when its iterations might see each other's results."""
    memory = core.memory
    for _, _, ready in memory.pending:
        if ready > clock:
            return None  # an iteration might wait for it
    widest = max(count for _, _, _, count, _ in steps)
    most = max(1, _ELEMENTS // (memory.batch * max(widest, 1)))
    iterations, nxt, values, addresses = scan(core, budget, most)
    page = memory.page
    index = -1  # the one page every access falls in
    plans = []
    for (_, fn, element, count, immediate), operands in zip(steps, addresses, strict=True):
        size = count * ELEMENT_DTYPES[element].itemsize
        if size == 0:
            return None
        places = [np.array(operand, dtype=np.int64) for operand in operands]
        for place in places:
            low, high = int(place.min()), int(place.max()) + size
            if low < 0 or high > memory.size or low // page != (high - 1) // page:
                return None
            if index < 0:
                index = low // page
            elif low // page != index:
                return None
        bytes_of = np.arange(size)
        spans = [(place - index * page)[:, None] + bytes_of for place in places]
        plans.append((fn, element, immediate, spans))
    if not _independent([p[3] for p in plans], page):
        return None
    data = memory.page_at(index)  # uint8 [batch, page]
    for fn, element, immediate, (dst, *sources) in plans:
        dtype = ELEMENT_DTYPES[element]
        args = [np.take(data, span, axis=1).view(dtype) for span in sources]  # [batch, it., n]
        if len(args) == 2:
            result = binary_values(fn, args[0], args[1], element)
        else:
            result = immediate_values(fn, args[0], immediate, element)
        stored = result.astype(dtype).view(np.uint8)
        if (dst[0] == dst).all():  # one place: the last iteration's values stay
            data[:, dst[-1]] = stored[:, -1]
        else:
            data[:, dst] = stored
    regs = core.regs
    for number, value in zip(written, values, strict=True):
        regs[number] = value
    counts = core.counts
    for pc in range(start, end):
        counts[pc] += iterations
    return nxt, clock + cycles * iterations, budget - (end - start) * iterations


def _independent(spans: list[list[np.ndarray]], page: int) -> bool:
    """No instruction reads bytes any writes or writes bytes another writes, and each
    writes one place or places apart. spans[k] = [dst, sources...], [iterations, size]."""
    written = np.zeros(page, dtype=bool)
    for dst, *_ in spans:
        starts = dst[:, 0]
        if not (starts[0] == starts).all():
            ordered = np.sort(starts)
            if (np.diff(ordered) < dst.shape[1]).any():
                return False
        if written[dst].any():
            return False
        written[dst] = True
    return not any(written[source].any() for _, *sources in spans for source in sources)
