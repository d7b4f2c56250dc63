"""Straight-line runs of core-local instructions, translated once into Python functions.

The interpreter loop (machine.py `_run_core`) pays for every instruction a
dispatch, a call, counters and clock bookkeeping; for a loop of scalar
instructions that is most of the time. A block is the run of instructions
from some pc up to and including the first branch, stopping before any
ordered instruction (send, recv, sync, ld, st, wprog: they run in global time order)
or halt. It is translated on first entry into one Python function with the
same effect as interpreting it one instruction at a time:

- scalar instructions and branches become inline Python (control.py's
  semantics: li, wrapping addi/add/sub/mul, r0 reads 0 and ignores writes);
- every other instruction (vector, requant, copy, fill, mvm) calls its
  semantic function from the registry, the one definition of its meaning;
- the clock advances as in the interpreter: after an instruction that touches
  memory, to any stall it raised (an MVM result or crossbar it waited for),
  then by the instruction's static cycles; mvm sees the core's pc and clock;
- a block whose branch jumps back to its own start (a counted loop) loops
  inside the function.

The function runs only while the step budget cannot run out inside it (the
interpreter then takes over, so the step-limit error names the same
instruction), and it is not used when a trace records every instruction.
Counts of executed instructions are added once per call (iterations x each).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cimc.isa.simulator.control import _MASK, _SIGN

# fn(core, clock, budget) -> (next pc, clock, budget left)
BlockFunction = Callable[[Any, int, int], tuple[int, int, int]]

# A core's `blocks` entry for a pc: UNSEEN, SEEN (entered once), False (no block starts
# there), or the translated (function, length).
UNSEEN, SEEN = object(), object()

# Scalar instructions as Python over the register list `r` (operands as in control.py).
_SCALAR = {
    "li": "r[{0}] = {1}",
    "addi": "r[{0}] = (({1} + {2} + _SIGN) & _MASK) - _SIGN",
    "add": "r[{0}] = (({1} + {2} + _SIGN) & _MASK) - _SIGN",
    "sub": "r[{0}] = (({1} - {2} + _SIGN) & _MASK) - _SIGN",
    "mul": "r[{0}] = (({1} * {2} + _SIGN) & _MASK) - _SIGN",
}
# Branch condition (None: always taken) over operand texts.
_BRANCH = {"jmp": None, "bne": "{0} != {1}", "blt": "{0} < {1}"}


_COMPILED: dict[str, Any] = {}  # block source -> code object


def _reg(number: int) -> str:
    return "0" if number == 0 else f"r[{number}]"


def block_end(core: Any, start: int) -> int:
    """One past the last instruction of the block starting at `start` (== start: none)."""
    end = start
    names = core.names
    while end < len(names):
        name = names[end]
        if core.ordered[end] or name == "halt":
            break
        end += 1
        if name in _BRANCH:
            break
    return end


def enter(core: Any, pc: int, state: object) -> object:
    """The new `blocks` entry at `pc` when the core gets there in `state` (UNSEEN or SEEN).

    Translating costs about as much as interpreting a block a few dozen times, so a
    block runs translated from its second entry on, or at once when it loops on itself.
    """
    if state is UNSEEN:
        end = block_end(core, pc)
        if end == pc:
            return False
        last = core.operands[end - 1]
        loops = core.names[end - 1] in _BRANCH and last[-1] == pc
        if not loops:
            return SEEN
    return translate(core, pc) or False


def translate(core: Any, start: int) -> tuple[BlockFunction, int] | None:
    """The function of the block at `start` and its length, or None if there is none."""
    end = block_end(core, start)
    if end == start:
        return None
    length = end - start
    lines: list[str] = []
    # Everything that varies between blocks of the same shape is a name, not source text,
    # so that blocks of the same shape (a loop repeated over rows...) share one compilation.
    names: dict[str, Any] = {"_SIGN": _SIGN, "_MASK": _MASK, "S": start, "E": end}
    pending = 0  # static cycles not yet added to `clock`

    def flush() -> None:
        nonlocal pending
        if pending:
            lines.append(f"clock += {pending}")
            pending = 0

    branch: tuple[str | None, int] | None = None
    for i, pc in enumerate(range(start, end)):
        name = core.names[pc]
        o = core.operands[pc]
        if name in _SCALAR:
            if name == "li":
                if o[0]:
                    lines.append(_SCALAR[name].format(o[0], o[1]))
            elif o[0]:
                rhs = (_reg(o[1]), str(o[2]) if name == "addi" else _reg(o[2]))
                lines.append(_SCALAR[name].format(o[0], *rhs))
            pending += core.cycles[pc]
        elif name in _BRANCH:
            condition = _BRANCH[name]
            text = condition.format(_reg(o[0]), _reg(o[1])) if condition else None
            branch = (text, o[-1])
            names["T"] = o[-1]
            pending += core.cycles[pc]
        else:  # a semantic function that may touch memory and stall
            flush()
            names[f"h{i}"], names[f"o{i}"], names[f"t{i}"] = (
                core.handlers[pc], o, core.elements[pc])
            lines.append(f"core.pc = S + {i}")  # located errors; mvm reads its cost by pc
            if core.mvm[pc]:
                lines.append("core.clock = clock")
            lines.append(f"h{i}(core, o{i}, t{i})")
            lines.append("if memory.stall:")
            lines.append("    if memory.stall > clock: clock = memory.stall")
            lines.append("    memory.stall = 0")
            pending += core.cycles[pc]
    flush()
    body: list[str] = []
    loops = branch is not None and branch[1] == start
    if branch is None:
        body += lines + ["nxt = E", "break"]
    else:
        text, target = branch
        taken = ["nxt = T"]
        if loops:  # another iteration only while the budget cannot run out inside it
            taken.insert(0, f"if budget - {length} * it > {length}: continue")
        if text is None:
            body += lines + taken + ["break"]
        else:
            body += lines + [f"if {text}:", *("    " + t for t in taken), "else:",
                             "    nxt = E", "break"]
    source = "\n".join([
        "def block(core, clock, budget):",
        "    r = core.regs",
        "    memory = core.memory",
        "    counts = core.counts",
        "    it = 0",
        "    while True:",
        "        it += 1",
        *("        " + line for line in body),
        "    for pc in range(S, E):",
        "        counts[pc] += it",
        f"    return nxt, clock, budget - {length} * it",
    ])
    code = _COMPILED.get(source)
    if code is None:
        code = _COMPILED[source] = compile(source, "<translated block>", "exec")
    exec(code, names)  # noqa: S102  (source generated above from the decoded stream)
    return names["block"], length
