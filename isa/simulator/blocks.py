"""Straight-line runs of core-local instructions, translated once into Python functions.

The interpreter loop (machine.py `_run_core`) pays for every instruction a
dispatch, a call, counters and clock bookkeeping; for a loop of scalar
instructions that is most of the time. A block is the run of instructions
from some pc up to and including the first branch, stopping before any
ordered instruction (send, recv, sync, ld, st, wprog: they run in global time order)
or halt. It is translated on first entry into one Python function with the
same effect as interpreting it one instruction at a time:

- scalar instructions and branches become inline Python (control.py's
  semantics: li, wrapping addi/add/sub/mul, r0 reads 0 and ignores writes)
  over registers held in local variables, stored back to the core before a
  semantic function runs (it reads its addresses there) and on exit;
- every other instruction (vector, requant, copy, fill, mvm) calls its
  semantic function from the registry, the one definition of its meaning;
- the clock advances as in the interpreter: after an instruction that touches
  memory, to any stall it raised (an MVM result or crossbar it waited for),
  then by the instruction's static cycles; mvm sees the core's pc and clock;
- a block whose branch jumps back to its own start (a counted loop) loops
  inside the function, for at most as many iterations as the step budget
  allows; a loop of scalar instructions only adds its cycles once, on exit.

The function runs only while the step budget cannot run out inside it (the
interpreter then takes over, so the step-limit error names the same
instruction), and it is not used when a trace records every instruction.
Counts of executed instructions are added once per call (iterations x each).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cimc.isa.simulator.batch import run_loop
from cimc.isa.simulator.control import _MASK, _SIGN
from cimc.isa.simulator.vector import ELEMENTWISE

# fn(core, clock, budget) -> (next pc, clock, budget left)
BlockFunction = Callable[[Any, int, int], tuple[int, int, int]]

# A core's `blocks` entry for a pc: UNSEEN, SEEN (entered once), False (no block starts
# there), or the translated (function, length).
UNSEEN, SEEN = object(), object()

# Registers live in locals (`r1`...) inside a block: read at entry, stored back before
# any semantic function runs (it reads addresses from core.regs) and at exit.
# 64-bit wrapping as control.py's _wrap, written out; an immediate add can only leave the
# range on one side, so it costs one comparison instead of three operations.
_WRAP = f"(({{}} + {_SIGN}) & {_MASK}) - {_SIGN}"
_TOP, _BOTTOM, _SPAN = _SIGN - 1, -_SIGN, _MASK + 1
_SCALAR_NAMES = ("li", "addi", "add", "sub", "mul")
# Branch condition (None: always taken) over operand texts, and its negation.
_BRANCH = {"jmp": None, "bne": "{0} != {1}", "blt": "{0} < {1}"}
_NEGATED = {"bne": "{0} == {1}", "blt": "{0} >= {1}"}


_COMPILED: dict[str, Any] = {}  # block source -> code object


def _reg(number: int) -> str:
    return "0" if number == 0 else f"r{number}"


def _scalar(name: str, o: tuple[int, ...]) -> list[str]:
    """Python for one scalar instruction over register locals (control.py's semantics)."""
    if not o[0]:
        return []  # writes to r0 are dropped; scalar instructions have no other effect
    rd = f"r{o[0]}"
    if name == "li":
        return [f"{rd} = {o[1]}"]
    if name == "addi":
        if o[2] > 0:
            return [f"{rd} = {_reg(o[1])} + {o[2]}", f"if {rd} > {_TOP}: {rd} -= {_SPAN}"]
        if o[2] < 0:
            return [f"{rd} = {_reg(o[1])} - {-o[2]}", f"if {rd} < {_BOTTOM}: {rd} += {_SPAN}"]
        return [f"{rd} = {_reg(o[1])}"]
    operator = {"add": "+", "sub": "-", "mul": "*"}[name]
    return [f"{rd} = " + _WRAP.format(f"{_reg(o[1])} {operator} {_reg(o[2])}")]


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
    # Everything that varies between blocks of the same shape is a name, not source text,
    # so that blocks of the same shape (a loop repeated over rows...) share one compilation.
    names: dict[str, Any] = {"S": start, "E": end}
    lines: list[str] = []
    scan_lines: list[str] = []  # the scalar part alone, recording vector operand addresses
    elementwise: list[Any] | None = []  # vector instructions for batch.run_loop (None: not all
    # are elementwise)
    calls: list[int] = []  # line index of each semantic call, to store registers before it
    stored: list[set[int]] = []  # registers written since the previous call, per call
    written: set[int] = set()  # ... since the last call so far
    used: set[int] = set()
    pending = 0  # static cycles not yet added to `clock`

    def flush() -> None:
        nonlocal pending
        if pending:
            lines.append(f"clock += {pending}")
            pending = 0

    branch: tuple[str, int] | None = None
    compared: list[str] = []  # the branch's register operands as Python
    for i, pc in enumerate(range(start, end)):
        name = core.names[pc]
        o = core.operands[pc]
        if name in _BRANCH:
            used.update(o[:-1])
            branch = (name, o[-1])
            compared = [_reg(n) for n in o[:-1]]
            names["T"] = o[-1]
            pending += core.cycles[pc]
        elif name in _SCALAR_NAMES:
            lines += _scalar(name, o)
            scan_lines += _scalar(name, o)
            if o[0]:
                used.update(() if name == "li" else o[1:2] if name == "addi" else o[1:3])
                used.add(o[0])
                written.add(o[0])
            pending += core.cycles[pc]
        else:  # a semantic function that may touch memory and stall
            flush()
            names[f"h{i}"], names[f"o{i}"], names[f"t{i}"] = (
                core.handlers[pc], o, core.elements[pc])
            if name in ELEMENTWISE and elementwise is not None:
                layout, fn = ELEMENTWISE[name]
                places = (0, 2, 4) if layout == "dst a b n" else (0, 2)
                k = len(elementwise)
                elementwise.append((layout, fn, core.elements[pc], o[-1],
                                    0 if len(places) == 3 else o[4]))
                for j, at in enumerate(places):
                    used.add(o[at])
                    scan_lines.append(f"A{k}_{j}.append({_reg(o[at])} + {o[at + 1]})")
            else:
                elementwise = None
            calls.append(len(lines))
            stored.append(written)
            written = set()
            lines.append(f"core.pc = S + {i}")  # located errors; mvm reads its cost by pc
            if core.mvm[pc]:
                lines.append("core.clock = clock")
            lines.append(f"h{i}(core, o{i}, t{i})")
            lines.append("if memory.stall:")
            lines.append("    if memory.stall > clock: clock = memory.stall")
            lines.append("    memory.stall = 0")
            pending += core.cycles[pc]
    loops = branch is not None and branch[1] == start
    if calls:
        flush()
        if loops:  # the first call also follows the previous iteration's tail
            stored[0] |= written
    all_written = set().union(written, *stored)
    for at, registers in reversed(list(zip(calls, stored, strict=True))):
        lines[at:at] = [f"r[{n}] = r{n}" for n in sorted(registers)]
    used.discard(0)
    head = ["r = core.regs", "counts = core.counts"]
    head += ["memory = core.memory"] if calls else []
    head += [f"r{n} = r[{n}]" for n in sorted(used)]
    if branch is None:
        body, steps = lines + ["nxt = E"], "1"
    elif not loops:
        kind, _ = branch
        condition = _BRANCH[kind]
        if condition is None:
            body = lines + ["nxt = T"]
        else:
            test = condition.format(*compared)
            body = lines + [f"nxt = T if {test} else E"]
        steps = "1"
    else:
        # Iterations while the budget cannot run out inside one (the interpreter then
        # takes over at the loop's start, so the step-limit error names the same line).
        kind, _ = branch
        body = ["nxt = T", f"for it in range(1, (budget - 1) // {length} + 1):"]
        body += ["    " + line for line in lines or ["pass"]]
        if kind != "jmp":
            exit_test = _NEGATED[kind].format(*compared)
            body += [f"    if {exit_test}:", "        nxt = E", "        break"]
        steps = "it"
    if not calls and pending:
        body.append(f"clock += {pending} * {steps}" if loops else f"clock += {pending}")
    tail = [f"r[{n}] = r{n}" for n in sorted(all_written)]
    tail += ["for pc in range(S, E):", f"    counts[pc] += {steps}",
             f"return nxt, clock, budget - {length} * {steps}"]
    source = "\n".join(["def block(core, clock, budget):",
                        *("    " + line for line in head + body + tail)])
    if loops and elementwise:  # its vector instructions all elementwise: try them batched
        cycles = sum(core.cycles[start:end])
        source = _batched(source, elementwise, scan_lines, sorted(used), sorted(all_written),
                          branch, compared, length, cycles, names)
    code = _COMPILED.get(source)
    if code is None:
        code = _COMPILED[source] = compile(source, "<translated block>", "exec")
    exec(code, names)  # noqa: S102  (source generated above from the decoded stream)
    return names["block"], length


def _batched(source: str, steps: list[Any], scan_lines: list[str], used: list[int],
             written: list[int], branch: Any, compared: list[str], length: int, cycles: int,
             names: dict[str, Any]) -> str:
    """The block's source, first trying the whole loop at once (batch.run_loop) with a
    `scan` of its scalar part that records each vector operand's address per iteration
    (in lists A<instruction>_<operand>, as the lines in scan_lines append to them)."""
    kind = branch[0]
    lists = [[f"A{k}_{j}" for j in range(3 if step[0] == "dst a b n" else 2)]
             for k, step in enumerate(steps)]
    scan = ["r = core.regs", *(f"r{n} = r[{n}]" for n in used if n),
            *(f"{name} = []" for operands in lists for name in operands),
            "nxt = T", f"for it in range(1, min((budget - 1) // {length}, most) + 1):",
            *("    " + line for line in scan_lines)]
    if kind != "jmp":
        scan += [f"    if {_NEGATED[kind].format(*compared)}:",
                 "        nxt = E", "        break"]
    grouped = ", ".join("(" + ", ".join(operands) + ",)" for operands in lists)
    values = "".join(f"r{n}, " for n in written)
    scan.append(f"return it, nxt, ({values}), ({grouped},)")
    names["STEPS"], names["WRITTEN"], names["TRY"] = tuple(steps), tuple(written), [True]
    names["run_loop"] = run_loop
    # Tried until it is refused once (a loop whose iterations depend on each other would
    # pay the scan at every entry).
    attempt = ["    if TRY[0]:",
               "        done = run_loop(core, clock, budget, scan, STEPS, WRITTEN, S, E, "
               f"{cycles})",
               "        if done is not None:",
               "            return done",
               "        TRY[0] = False"]
    head, rest = source.split("\n", 1)
    return "\n".join(["def scan(core, budget, most):", *("    " + line for line in scan),
                      head, *attempt, rest])
