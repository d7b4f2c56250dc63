"""Loops over a core's tasks: the code of consecutive tasks (output rows) that
repeats up to addresses becomes one loop, so a program does not grow with the
image height or the number of streamed images.

The code generator writes every task (one output row of one group on one
core) as straight-line code around a loop over the row's pixels. In steady
state the tasks of a core repeat with a short period (one row of each group it
works for): the same instructions, the same tags and local buffers, and
global addresses (`ld` of input rows, `st` of output rows) that grow by a
constant per repetition. `reroll` finds such runs and emits

    li r15, 0 / li r14, COUNT / li rK, 0 ...      # counter, limit, one register per step
    LOOP: <one period, each varying address as `base(rK)`>
          addi rK, rK, step ... / addi r15, r15, 1 / blt r15, r14, LOOP

Then the same again over the result (loops and single tasks), with r13 / r12
as counter and limit: the streamed images of throughput mode repeat a core's
whole row sequence, so a program streaming N images holds it once. Registers
r8..r15 are free for this (the task code uses r1..r7). Tasks that do not
repeat (the first rows with padding, the last ones) stay unrolled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A number standing alone (not part of a register, mnemonic or label).
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?![\w])")
_LABEL_DEF = re.compile(r"^([A-Za-z_][\w]*):$")

@dataclass(frozen=True)
class Registers:
    """The registers of one loop level and the longest period (in tasks) it looks for."""

    counter: str
    limit: str
    steps: tuple[str, ...]
    max_period: int


ROWS = Registers("r15", "r14", ("r8", "r9", "r10", "r11"), 8)
IMAGES = Registers("r13", "r12", (), 64)
MIN_REPEATS = 3


@dataclass(frozen=True)
class Shape:
    """A task's code up to its numbers: line templates with `{}` for each number."""

    templates: tuple[str, ...]
    numbers: tuple[int, ...]
    addresses: tuple[bool, ...]  # per number: an absolute local/global address `N(r0)`
    kind: int = 0  # equal for equal templates (set by _reroll, for fast comparison)


def _shape(lines: list[str], seen: dict[str, tuple[str, list[int], list[bool]]]) -> Shape:
    """The task's code up to its numbers; `seen` caches each distinct line's split (tasks
    repeat most of their lines)."""
    labels: dict[str, str] = {}
    for line in lines:
        if line[-1:] == ":":
            found = _LABEL_DEF.match(line)
            if found:
                labels[found.group(1)] = f"@L{len(labels)}"
    templates: list[str] = []
    numbers: list[int] = []
    addresses: list[bool] = []
    for line in lines:
        if line[:1] == "#":
            continue
        if labels:  # a label stands alone before `:` or ends a branch (its last operand)
            if line.endswith(":"):
                line = labels.get(line[:-1], line[:-1]) + ":"
            else:
                cut = max(line.rfind(" "), line.rfind(","))
                if line[cut + 1:] in labels:
                    line = line[:cut + 1] + labels[line[cut + 1:]]
        split = seen.get(line)
        if split is None:
            parts, found_numbers, found_addresses = [], [], []
            last = 0
            for match in _NUMBER.finditer(line):
                parts.append(line[last:match.start()])
                found_numbers.append(int(match.group()))
                found_addresses.append(line.startswith("(r0)", match.end()))
                last = match.end()
            parts.append(line[last:])
            template = "{}".join(p.replace("{", "{{").replace("}", "}}") for p in parts)
            split = seen[line] = (template, found_numbers, found_addresses)
        templates.append(split[0])
        numbers += split[1]
        addresses += split[2]
    return Shape(tuple(templates), tuple(numbers), tuple(addresses))


def _linear(shapes: list[Shape], start: int, period: int, repeats: int
            ) -> tuple[int, list[int] | None]:
    """(count, steps): each number's step from the first repetition of the period's code
    to the second, and how many of the `repeats` repetitions follow those steps; steps
    None if one varies where it is not an absolute address. One pass: the longest
    linear run is the first repetition that breaks the steps."""
    steps = []
    for t in range(period):
        base, second = shapes[start + t], shapes[start + period + t]
        for k, value in enumerate(base.numbers):
            step = second.numbers[k] - value
            if step and not base.addresses[k]:
                return 1, None
            steps.append(step)
    count = 2
    while count < repeats:
        k = 0
        for t in range(period):
            numbers = shapes[start + t].numbers
            later = shapes[start + count * period + t].numbers
            for j, value in enumerate(numbers):
                if later[j] != value + count * steps[k + j]:
                    return count, steps
            k += len(numbers)
        count += 1
    return count, steps


def _same_kind_runs(shapes: list[Shape], period: int) -> list[int]:
    """For each task j, how many tasks from j on have the kind of the task `period`
    later (so a run of `period` tasks from j repeats 1 + that // period times)."""
    runs = [0] * (len(shapes) + 1)
    for j in range(len(shapes) - period - 1, -1, -1):
        if shapes[j].kind == shapes[j + period].kind:
            runs[j] = runs[j + 1] + 1
    return runs


def _run(shapes: list[Shape], start: int, period: int, registers: Registers,
         runs: list[int]) -> tuple[int, list[int] | None]:
    """(repeats, steps) of the longest run of `period` tasks repeating from `start`
    (`runs`: _same_kind_runs of `period`)."""
    repeats = max(1, min(1 + runs[start] // period, (len(shapes) - start) // period))
    if repeats < MIN_REPEATS:
        return 1, None
    count, steps = _linear(shapes, start, period, repeats)
    if steps is None or count < MIN_REPEATS or \
            len({s for s in steps if s}) > len(registers.steps):
        return 1, None
    return count, steps


def reroll(tasks: list[list[str]], name: str) -> list[str]:
    """The lines of `tasks` (each a task's code) with repeating runs as loops, then
    repeating runs of those as outer loops; loop labels start with `name`."""
    blocks = _reroll(tasks, f"{name}_row", ROWS)
    return [line for block in _reroll(blocks, f"{name}_image", IMAGES) for line in block]


def _reroll(tasks: list[list[str]], name: str, registers: Registers) -> list[list[str]]:
    kinds: dict[tuple[str, ...], int] = {}
    shapes = []
    seen: dict[str, tuple[str, list[int], list[bool]]] = {}
    for task in tasks:
        shape = _shape(task, seen)
        shapes.append(Shape(shape.templates, shape.numbers, shape.addresses,
                            kinds.setdefault(shape.templates, len(kinds))))
    runs = {period: _same_kind_runs(shapes, period)
            for period in range(1, registers.max_period + 1)}
    blocks: list[list[str]] = []
    i = loops = 0
    while i < len(tasks):
        best: tuple[int, int, list[int] | None] = (1, 1, None)  # repeats, period, steps
        for period in range(1, registers.max_period + 1):
            if i + MIN_REPEATS * period > len(tasks):
                break
            repeats, steps = _run(shapes, i, period, registers, runs[period])
            if steps is not None and repeats * period > best[0] * best[1]:
                best = (repeats, period, steps)
        repeats, period, steps = best
        if steps is None:
            blocks.append(tasks[i])
            i += 1
            continue
        loops += 1
        blocks.append(_loop(tasks, shapes, i, period, repeats, steps, registers,
                            f"{name}{loops}"))
        i += repeats * period
    return blocks


def _loop(tasks: list[list[str]], shapes: list[Shape], start: int, period: int,
          repeats: int, steps: list[int], registers: Registers, label: str) -> list[str]:
    regs = {s: registers.steps[k] for k, s in enumerate(sorted({s for s in steps if s}))}
    comments = [line for line in tasks[start] if line.startswith("#")]
    counter, limit = registers.counter, registers.limit
    lines = [f"{c} .. x{repeats}" for c in comments[:1]]
    lines += [f"li {counter}, 0", f"li {limit}, {repeats}"]
    lines += [f"li {reg}, 0" for reg in regs.values()]
    lines.append(f"{label}:")
    k = 0
    for t in range(period):
        shape = shapes[start + t]
        values: list[str] = []
        for value in shape.numbers:
            step = steps[k]
            values.append(str(value) if not step else f"{value}({regs[step]})")
            k += 1
        for template_line in _fill(shape, values):
            lines.append(template_line.replace("@L", f"{label}_t{t}_L"))
    lines += [f"addi {reg}, {reg}, {step}" for step, reg in regs.items()]
    lines += [f"addi {counter}, {counter}, 1", f"blt {counter}, {limit}, {label}"]
    return lines


def _fill(shape: Shape, values: list[str]) -> list[str]:
    out = []
    k = 0
    for template in shape.templates:
        count = template.count("{}") - template.count("{{}}")
        line = template.format(*values[k:k + count])
        # `N(r0)` with a step register became `N(rK)(r0)`: keep the register base.
        out.append(re.sub(r"\((r\d+)\)\(r0\)", r"(\1)", line))
        k += count
    return out
