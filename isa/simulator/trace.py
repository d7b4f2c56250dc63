"""A Chrome trace-event timeline of a run (opens in Perfetto or chrome://tracing).

One track (thread) per core. The first `detail` instructions of each core
are one event each; after that the trace is loop-compressed: straight-line
runs of instructions become one block event, ending at a taken backward
branch, and back-to-back iterations of the same block merge into one
"loop" event with an iteration count. Network, barrier, global-memory and
weight-channel (wprog) instructions stay individual events (they explain the
waiting). At most `max_events` events are kept in all; the rest are dropped
and the trace says so.

`labels` (line -> name, from the program text's task comments such as
`# conv1#0 row 3`, `task_labels`) names each event after the task its first
instruction belongs to, e.g. "conv1#0 row 3 (lines 40-52)". Every message is a flow
from its `send` to the `recv` that takes it (matched in order on each sender,
receiver and tag, as the network delivers them), so Perfetto draws the arrows.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import defaultdict, deque
from dataclasses import dataclass

from cimc.isa.program import Instruction

# Mnemonics kept as individual events even in compressed mode.
_COMMUNICATION = ("send", "recv", "sync", "ld", "st", "wprog")
# A task comment of the code generator: "# <group> row <n>" (".. xK" for a loop of K).
_TASK = re.compile(r"#\s*(\S+ row \d+)")


def task_labels(text: str) -> dict[int, str]:
    """Line number -> task name of every task comment in a program's text."""
    found = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _TASK.match(line.strip())
        if match:
            found[number] = match.group(1)
    return found


@dataclass
class _Block:
    first: int
    last: int
    start: int
    end: int
    instructions: int
    iterations: int = 1


class Trace:
    """Collects per-core instruction events during a run."""

    def __init__(self, streams: dict[int, list[Instruction]], clock_mhz: float,
                 detail: int = 2000, max_events: int = 200_000,
                 labels: dict[int, str] | None = None):
        self.streams = streams
        self.label_lines = sorted(labels or {})
        self.labels = labels or {}
        # Flow ends waiting for their partner, per (sender, receiver, tag).
        self.sends: dict[tuple[int, int, int], deque[dict[str, object]]] = defaultdict(deque)
        self.recvs: dict[tuple[int, int, int], deque[dict[str, object]]] = defaultdict(deque)
        self.next_flow = 0
        self.clock_mhz = clock_mhz
        self.detail = detail
        self.max_events = max_events
        self.events: list[dict[str, object]] = []
        self.dropped = 0
        self._detailed: dict[int, int] = {}
        self._open: dict[int, _Block | None] = {}  # block being extended
        self._loop: dict[int, _Block | None] = {}  # finished iterations not yet emitted

    def record(self, core: int, pc: int, start: int, end: int, next_pc: int | None) -> None:
        """Instruction `pc` of `core` ran from cycle `start` to `end`."""
        mnemonic = self.streams[core][pc].mnemonic
        used = self._detailed.get(core, 0)
        if used < self.detail or mnemonic.split(".")[0] in _COMMUNICATION:
            self._flush(core)
            self._detailed[core] = used + 1
            self._emit(core, self._named(core, pc, mnemonic), start, end,
                       {"line": self._line(core, pc)})
            self._flow(core, pc, start, end)
            return
        block = self._open.get(core)
        if block is not None and block.end != start:  # a wait ends the block
            self._flush(core)
            block = None
        if block is None:
            block = _Block(pc, pc, start, end, 0)
            self._open[core] = block
        block.last, block.end = max(block.last, pc), end
        block.instructions += 1
        if next_pc is not None and 0 <= next_pc <= pc:  # a loop iteration ends here
            self._open[core] = None
            loop = self._loop.get(core)
            if loop and (loop.first, loop.last) == (block.first, block.last) \
                    and loop.end == block.start:
                loop.end = block.end
                loop.iterations += 1
                loop.instructions += block.instructions
            else:
                self._flush_loop(core)
                self._loop[core] = block

    def _line(self, core: int, pc: int) -> int | None:
        loc = self.streams[core][pc].loc
        return loc.line if loc else None

    def _named(self, core: int, pc: int, what: str) -> str:
        """`what` prefixed with the task of instruction `pc` when the text named it."""
        line = self._line(core, pc)
        if line is None or not self.label_lines:
            return what
        at = bisect.bisect_right(self.label_lines, line) - 1
        return f"{self.labels[self.label_lines[at]]}: {what}" if at >= 0 else what

    def _flow(self, core: int, pc: int, start: int, end: int) -> None:
        """A send starts a flow and the recv that takes its message ends it; they pair up
        in order on each (sender, receiver, tag), whichever the run records first."""
        instruction = self.streams[core][pc]
        if instruction.mnemonic not in ("send", "recv"):
            return
        peer, tag = instruction.operands[0], instruction.operands[-1]
        sending = instruction.mnemonic == "send"
        key = (core, peer, tag) if sending else (peer, core, tag)
        event: dict[str, object] = {"name": "message", "cat": "message",
                                    "ph": "s" if sending else "f", "pid": 0, "tid": core,
                                    "ts": (start if sending else end) / self.clock_mhz}
        if not sending:
            event["bp"] = "e"  # bound to the recv slice that ends here
        mine, other = (self.sends, self.recvs) if sending else (self.recvs, self.sends)
        if not other[key]:
            mine[key].append(event)
            return
        partner = other[key].popleft()
        if len(self.events) + 2 > self.max_events:
            self.dropped += 2
            return
        event["id"] = partner["id"] = self.next_flow
        self.next_flow += 1
        self.events += [event, partner] if sending else [partner, event]

    def _emit(self, core: int, name: str, start: int, end: int, args: dict[str, object]) -> None:
        if len(self.events) >= self.max_events:
            self.dropped += 1
            return
        self.events.append({
            "name": name, "ph": "X", "pid": 0, "tid": core, "ts": start / self.clock_mhz,
            "dur": (end - start) / self.clock_mhz, "args": {"cycle": start, **args},
        })  # fmt: skip

    def _flush_loop(self, core: int) -> None:
        loop = self._loop.get(core)
        if loop is not None:
            lines = f"{self._line(core, loop.first)}-{self._line(core, loop.last)}"
            name = f"loop lines {lines}" if loop.iterations > 1 else f"block lines {lines}"
            self._emit(core, self._named(core, loop.first, name), loop.start, loop.end,
                       {"iterations": loop.iterations, "instructions": loop.instructions})
            self._loop[core] = None

    def _flush(self, core: int) -> None:
        self._flush_loop(core)
        block = self._open.get(core)
        if block is not None:
            lines = f"{self._line(core, block.first)}-{self._line(core, block.last)}"
            self._emit(core, self._named(core, block.first, f"block lines {lines}"),
                       block.start, block.end, {"instructions": block.instructions})
            self._open[core] = None

    def to_json(self) -> str:
        """The trace-event JSON document."""
        for core in sorted(self.streams):
            self._flush(core)
        names = [{"name": "thread_name", "ph": "M", "pid": 0, "tid": core,
                  "args": {"name": f"core {core}"}} for core in sorted(self.streams)]
        document = {
            "traceEvents": names + self.events,
            "displayTimeUnit": "ns",
            "otherData": {"time_unit": "microseconds at the target clock",
                          "clock_mhz": self.clock_mhz, "dropped_events": self.dropped},
        }
        return json.dumps(document, separators=(",", ":"))
