"""The machine: cores with their own clocks, run by a discrete-event scheduler.

Each core interprets its own instruction stream; control flow is
data-independent, so one interpretation serves the whole batch. The
scheduler always advances the runnable core with the smallest clock (ties by
core number). Instructions that only touch a core's own state run ahead
freely; those whose timing or data involve other cores (send, recv, sync,
ld, st, wprog) run only when their core is the earliest, so messages, link
bookings and global-memory and weight-channel accesses happen in time order,
deterministically.

Deadlock (every live core waits and nothing can wake it), messages left
unreceived when every core has halted (a send without its recv), and runaway
loops (more than `max_steps` instructions) end the run with a CimcError.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from cimc.diagnostics import CimcError
from cimc.isa.image import Image
from cimc.isa.program import Instruction, Program
from cimc.isa.simulator.blocks import enter
from cimc.isa.simulator.core import Core, where
from cimc.isa.simulator.crossbar import Analog
from cimc.isa.simulator.memory import Memory, MemoryFault
from cimc.isa.simulator.network import Network
from cimc.isa.simulator.registry import BLOCK, HALT
from cimc.isa.simulator.trace import Trace
from cimc.targets import Target


@dataclass(frozen=True)
class Message:
    arrival: int
    data: np.ndarray  # uint8 [batch, len]
    sent_at: Instruction


def one_blas_thread() -> AbstractContextManager[object]:
    """BLAS on one thread while the machine runs, unless the user set
    OPENBLAS_NUM_THREADS. Its matrix products are small (a batch of inputs times one
    crossbar group) and issued one at a time; OpenBLAS splits them over all cores and
    spin-waits between them, 10-50x slower on busy cores (measured: 1000x128 by 128x128
    float32, 16 ms on 2 busy cores, 0.28 ms on one). threadpoolctl sets and restores it."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class Machine:
    """The chip running one program over a batch of inputs."""

    def __init__(self, program: Program, image: Image | None, target: Target, batch: int,
                 analog: Analog, bit_level: bool = False, max_steps: int = 50_000_000,
                 trace: Trace | None = None, blocks: bool = True):
        self.target = target
        self.image = image
        self.batch = batch
        self.analog = analog
        self.bit_level = bit_level
        self.max_steps = max_steps
        self.steps = 0
        self.trace = trace
        # Straight-line code runs as translated blocks (blocks.py) unless every instruction
        # is traced, or the caller asks for the plain interpreter (the same results).
        self.blocks = blocks and trace is None
        self.global_memory = Memory("global memory", target.global_memory_bytes, batch)
        self.global_free = 0  # the shared global-memory channel is busy until then
        self.weight_free = 0  # the shared weight channel (wprog, reprogram.py) likewise
        self.network = Network(target)
        self.mailbox: dict[tuple[int, int, int], deque[Message]] = {}
        self.barrier: list[Core] = []
        self.cores: dict[int, Core] = {}
        for number in sorted(program.streams):
            if number >= target.cores:
                raise CimcError(f"the program has code for core {number} but target "
                                f"'{target.name}' has {target.cores} cores")
            self.cores[number] = Core(number, self, program.streams[number].instructions)
        self.ready: list[tuple[int, int]] = [(0, n) for n in self.cores]
        for number, segments in sorted(program.data.items()):
            if number not in self.cores:
                continue  # data for a core without code is never read
            for segment in segments:
                try:
                    self.cores[number].memory.write(segment.addr,
                                                    np.frombuffer(segment.data, np.uint8))
                except MemoryFault as exc:
                    raise CimcError(f"core {number}: .data at {segment.addr}: {exc}") from None
        for segment in program.global_data:
            try:
                self.global_memory.write(segment.addr, np.frombuffer(segment.data, np.uint8))
            except MemoryFault as exc:
                raise CimcError(f".global_data at {segment.addr}: {exc}") from None

    # -- scheduling -------------------------------------------------------------------------

    def run(self) -> None:
        """Run every core to its halt (or raise deadlock / step-limit errors)."""
        ready = self.ready
        heapq.heapify(ready)
        with one_blas_thread():
            while ready:
                _, number = heapq.heappop(ready)
                self._run_core(self.cores[number])
        stuck = [c for c in self.cores.values() if not c.halted]
        if stuck:
            raise self._deadlock(stuck)
        if any(self.mailbox.values()):
            raise self._unreceived()

    def wake(self, core: Core) -> None:
        core.blocked_since = None
        core.waiting_for = ""
        heapq.heappush(self.ready, (core.clock, core.number))

    def _run_core(self, core: Core) -> None:
        """Run `core` until it halts, blocks, or must wait for an earlier core."""
        handlers, operands, elements = core.handlers, core.operands, core.elements
        cycles, ordered, counts = core.cycles, core.ordered, core.counts
        mvm, memory = core.mvm, core.memory
        trace, ready = self.trace, self.ready
        number = core.number
        pc, clock = core.pc, core.clock
        budget = self.max_steps - self.steps
        start_budget = budget
        blocks = core.blocks if self.blocks else None
        try:
            while True:
                if blocks is not None and blocks[pc] is not False:
                    block = blocks[pc]
                    if block.__class__ is not tuple:
                        block = blocks[pc] = enter(core, pc, block)
                    if block.__class__ is tuple and budget > block[1]:
                        try:
                            pc, clock, budget = block[0](core, clock, budget)
                        except MemoryFault:
                            pc = core.pc  # the faulting instruction
                            raise
                        continue
                start = clock
                if ordered[pc]:
                    if memory.pending or core.local_operand[pc] is None:
                        clock = max(clock, core.results_ready(pc))  # MVM results it touches
                    # Another core is earlier (it may have been woken meanwhile): let it go first.
                    if ready and (clock, number) > ready[0]:
                        heapq.heappush(ready, (clock, number))
                        break
                    core.pc, core.clock = pc, clock
                    counts[pc] += 1
                    nxt = handlers[pc](core, operands[pc], elements[pc])
                    memory.stall = 0  # waited for above
                    if nxt == BLOCK:
                        core.blocked_since = clock
                        break
                    clock = core.clock
                else:
                    if mvm[pc]:
                        core.pc, core.clock = pc, clock
                    nxt = handlers[pc](core, operands[pc], elements[pc])
                    counts[pc] += 1
                    if memory.stall:  # it waited for an MVM result or a crossbar
                        clock = max(clock, memory.stall)
                        memory.stall = 0
                    if nxt == HALT:  # the core ends when its last MVM does
                        clock = max(clock, core.results_ready(pc))
                    clock += cycles[pc]
                if trace is not None:
                    trace.record(number, pc, start, clock, nxt)
                budget -= 1
                if nxt is None:
                    pc += 1
                elif nxt >= 0:
                    pc = nxt
                else:  # HALT
                    core.halted = True
                    break
                if budget <= 0:
                    raise core.error(
                        f"step limit of {self.max_steps} instructions reached: a runaway "
                        f"loop? (raise the limit if the program is really this long)",
                        core.instructions[pc])
        except MemoryFault as exc:
            raise core.error(str(exc), core.instructions[pc]) from None
        finally:
            self.steps += start_budget - budget
        core.pc, core.clock = pc, clock

    # -- cross-core instructions (called by their semantic functions) -----------------------

    def access_global(self, core: Core, nbytes: int) -> None:
        """ld/st timing: the chip's global-memory channel is shared by all cores."""
        start = max(core.clock, self.global_free)
        duration = core.cycles[core.pc]
        self.global_free = start + duration
        core.clock = start + duration

    def send(self, core: Core, dest: int, data: np.ndarray, tag: int) -> None:
        core.clock += core.cycles[core.pc]
        arrival = self.network.deliver(core.clock, core.number, dest, data.shape[1])
        message = Message(arrival, data, core.instructions[core.pc])
        receiver = self.cores.get(dest)
        pending = receiver.pending_recv if receiver else None
        if receiver is not None and pending and pending[0] == core.number and pending[3] == tag:
            self._complete_recv(receiver, message)
            self.wake(receiver)
        else:
            self.mailbox.setdefault((dest, core.number, tag), deque()).append(message)

    def receive(self, core: Core, source: int, addr: int, nbytes: int, tag: int) -> int | None:
        queue = self.mailbox.get((core.number, source, tag))
        core.pending_recv = (source, addr, nbytes, tag)
        if not queue:
            core.waiting_for = f"a message from core {source} with tag {tag} ({nbytes} bytes)"
            return BLOCK
        self._complete_recv(core, queue.popleft())
        return None

    def _complete_recv(self, core: Core, message: Message) -> None:
        assert core.pending_recv is not None
        source, addr, nbytes, tag = core.pending_recv
        instruction = core.instructions[core.pc]
        if message.data.shape[1] != nbytes:
            raise core.error(f"receives {nbytes} bytes but core {source} sent "
                             f"{message.data.shape[1]} with tag {tag} "
                             f"({where(message.sent_at)})", instruction)
        try:
            core.memory.write(addr, message.data)
        except MemoryFault as exc:
            raise core.error(str(exc), instruction) from None
        issued = core.clock
        core.clock = max(core.clock, message.arrival) + core.cycles[core.pc]
        core.pending_recv = None
        if core.blocked_since is not None:  # resumed by the sender: finish the instruction
            if self.trace is not None:
                self.trace.record(core.number, core.pc, issued, core.clock, None)
            core.pc += 1

    def arrive_at_barrier(self, core: Core) -> int | None:
        self.barrier.append(core)
        core.waiting_for = "the other cores to reach a sync"
        if self._check_barrier(arriving=core):
            return None
        return BLOCK

    def _check_barrier(self, arriving: Core | None = None) -> bool:
        """Release the barrier when every core with code waits at it."""
        if len(self.barrier) < sum(c.has_code for c in self.cores.values()):
            return False
        release = max(c.clock for c in self.barrier) + self.target.latency.scalar
        for waiting in self.barrier:
            waiting.clock = release
            if waiting is not arriving:
                if self.trace is not None:
                    start = waiting.blocked_since or 0
                    self.trace.record(waiting.number, waiting.pc, start, release, None)
                waiting.pc += 1
                self.wake(waiting)
        self.barrier = []
        return True

    def _unreceived(self) -> CimcError:
        """Every core halted with messages still in the mailboxes: a send without its recv
        (the receiver would have computed on whatever its buffer held)."""
        left = [(dst, src, tag, queue) for (dst, src, tag), queue in sorted(self.mailbox.items())
                if queue]
        shown = [f"core {src} -> core {dst} tag {tag}: {len(queue)} message(s), the first "
                 f"sent by {where(queue[0].sent_at)}" for dst, src, tag, queue in left[:5]]
        more = f"; and {len(left) - 5} more channels" if len(left) > 5 else ""
        return CimcError("every core halted but messages were sent and never received "
                         f"(a send without a matching recv): {'; '.join(shown)}{more}")

    def _deadlock(self, stuck: list[Core]) -> CimcError:
        lines = []
        for core in stuck:
            instruction = core.instructions[core.pc]
            waits = core.waiting_for
            if core.pending_recv is None and core in self.barrier:
                absent = [f"{c.number} ({'halted' if c.halted else 'blocked'})"
                          for c in self.cores.values() if c.has_code and c not in self.barrier]
                waits = f"cores {', '.join(absent)} to reach a sync"
            lines.append(f"core {core.number} waits at {where(instruction)} for {waits}")
        unreceived = [f"core {src} -> core {dst} tag {tag}"
                      for (dst, src, tag), queue in sorted(self.mailbox.items()) if queue]
        tail = f"; messages sent but never received: {', '.join(unreceived)}" if unreceived else ""
        return CimcError("deadlock: " + "; ".join(lines) + tail)
