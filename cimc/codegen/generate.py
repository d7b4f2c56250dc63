"""Code generation: a scheduled module -> per-core assembly lines and `.data`.

The dataflow plan (cimc/analysis/plan.py) says which core computes which rows
and in which order; this module writes the code of each part, one output row
of one group on one core:

* matvec / pool: refresh the band (the `kh` padded input rows the row needs:
  move the rows it shares with the previous row up with one `copy`, receive
  the new ones, or `ld` them for a model input, or fill padding rows), then a
  loop over the output pixels: gather the window, `mvm` the core's blocks,
  send partial sums to the column's reducer, or (reducer) receive and add
  them, add the bias, requantize into the output row buffer;
* eltwise / rescale / product / join: receive the operand rows, compute in chunks
  (scale, and a product with an operand of one pixel: per pixel; dot: per output pixel
  and column, a product and a sum of two channel vectors);
* a matvec, pool, eltwise or rescale with a lookup table (a quantized activation) passes its
  result codes through `vlut` before they leave the core;
* then send the row (the channels this core reduces) to every core that
  needs it, and `st` it when it is a model output.

Each core's local memory holds, from the top down, its constant tables and the
band (line buffer) of every matvec / pool / gather group it works for that keeps
input rows from one output row to the next: those bands live for the whole run
because groups interleave. A band refreshed whole for every row (a gemm's, one
row of a take: cimc.analysis.window.transient) is scratch. Everything else a part uses (window,
partial sums, staging, output row) lives only while one of its rows runs, so
all parts of a core share one scratch area from address 0 up, as large as the
largest part needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cimc.analysis.gather import geometry
from cimc.analysis.plan import Group, Plan, Recv, build
from cimc.analysis.traffic import block_name, column_ranges, unit_cores
from cimc.analysis.window import Window, band_plan, transient
from cimc.codegen.loops import reroll
from cimc.diagnostics import CimcError
from cimc.dialect.chip import (
    CHUNK,
    blocks_of,
    image_dims,
    lut_table,
    pixel_runs,
    rescale_clamps,
)
from cimc.dialect.host import chip_stores
from cimc.dialect.phased import phase_count, phase_modules
from cimc.ir.module import Module, Op
from cimc.isa.asm_quote import comment_text
from cimc.targets import Target

ALIGN = 16


@dataclass
class CoreCode:
    """What one core runs: assembly lines, `.data` tables, local memory use."""

    core: int
    top: int  # lowest address used by tables and bands (they grow down from the top)
    lines: list[str] = field(default_factory=list)
    data: list[tuple[int, list[int]]] = field(default_factory=list)
    peak: int = 0  # highest address used by scratch buffers
    cursor: int = 0  # next free scratch address of the part being set up
    # Tables already placed, by their words: parts with the same constants (the steps
    # of an unrolled recurrent layer, layers of one quantization) read one copy.
    placed: dict[tuple[int, ...], int] = field(default_factory=dict)
    kept: int = 0  # bytes of bands (buffers for the whole run)
    bands: int = 0  # how many

    def table(self, words: np.ndarray) -> int:
        """Place i32 words among the constant tables (once: the same words again get
        the same address); return their address."""
        flat = tuple(int(v) for v in np.asarray(words, dtype=np.int64).reshape(-1))
        if flat in self.placed:
            return self.placed[flat]
        self.top = (self.top - 4 * len(flat)) // ALIGN * ALIGN
        self.data.append((self.top, list(flat)))
        self.placed[flat] = self.top
        return self.top

    def byte_table(self, codes: np.ndarray) -> int:
        """Place a table of bytes (a lookup table's 256 codes) among the constant tables
        as little-endian words; return its address."""
        raw = np.ascontiguousarray(codes).view(np.uint8).tobytes()
        raw += bytes(-len(raw) % 4)
        return self.table(np.frombuffer(raw, dtype="<i4"))

    def keep(self, size: int) -> int:
        """A buffer of `size` bytes for the whole run (a band)."""
        before = self.top
        self.top = (self.top - size) // ALIGN * ALIGN
        self.kept += before - self.top
        self.bands += 1
        return self.top

    def begin_part(self) -> None:
        """Start the scratch buffers of another part (they overlap the others' scratch)."""
        self.cursor = 0

    def take(self, size: int) -> int:
        """A scratch buffer of `size` bytes, valid while one row of the part runs."""
        addr = self.cursor
        self.cursor = -(-(addr + size) // ALIGN) * ALIGN
        self.peak = max(self.peak, self.cursor)
        return addr


def mode_of(module: Module) -> tuple[str, int]:
    """(pipeline mode, streamed images) recorded by `schedule`."""
    for op in module.ops():
        if "pipeline" in op.attrs:
            return str(op.attrs["pipeline"]), int(op.attrs.get("stream", 1))
    return "latency", 1


@dataclass
class Generated:
    """A scheduled module's plan and the code generated from it for `target`. `schedule`
    keeps it with the module (Module.keep_analysis), so that emission, the report and the
    simulator's expectations use the code generated once per compile. A module run in
    phases has a plan per phase (`phases`; `plan` is the first's)."""

    target: Target
    plan: Plan
    cores: dict[int, CoreCode]
    phases: tuple[Plan, ...] = ()
    # Global memory the program initialises (each phase's tables): (address, bytes).
    global_data: list[tuple[int, bytes]] = field(default_factory=list)


def plan_and_code(module: Module, target: Target) -> Generated:
    """The plan and code of a scheduled module for `target`: the ones `schedule` kept,
    else (a module read back from .cir text) made now and kept."""
    found = module.analysis(Generated)
    if found is not None and found.target == target:
        return found
    mode, stream = mode_of(module)
    if phase_count(module) > 1:
        result = phased_code(module, target, stream)
    else:
        plan = build(module, target, stream, mode == "throughput")
        result = Generated(target, plan, generate(module, target, plan))
    module.keep_analysis(result)
    return result


def phased_code(module: Module, target: Target, batch: int) -> Generated:
    """Plan and code of a scheduled module run in phases: each phase planned on its own
    (its batch of images pipelined through it when more than one), then joined
    (`generate_phases`), its tables in global memory after the module's tensors."""
    phases = phase_modules(module)
    plans = [build(phase, target, batch, batch > 1) for phase in phases]
    end = 0
    for op in module.ops():
        if "addr" in op.attrs and op.kind != "view":
            slot = int(op.attrs.get("image_stride", 0))
            size = batch * slot if slot else module.values[op.outputs[0]].size
            end = max(end, int(op.attrs["addr"]) + size)
    cores, tables = generate_phases(phases, target, plans, -(-end // ALIGN) * ALIGN)
    return Generated(target, plans[0], cores, tuple(plans), tables)


def generate(module: Module, target: Target, plan: Plan) -> dict[int, CoreCode]:
    """Per-core code of a scheduled module following `plan`; CimcError if local memory
    overflows."""
    cores = {c: CoreCode(c, target.local_memory_bytes) for c in plan.order}
    for core, lines in code_lines(module, target, plan, cores, "").items():
        cores[core].lines += [*lines, "halt"]
    for code in cores.values():
        check_memory(code, target)
    return dict(sorted(cores.items()))


def generate_phases(phases: list[Module], target: Target, plans: list[Plan], base: int
                    ) -> tuple[dict[int, CoreCode], list[tuple[int, bytes]]]:
    """Per-core code of a module run in phases (one module and plan per phase), and the
    global memory it initialises from address `base` up. On every core that works in any
    phase, phase by phase: `wprog` of the phase's crossbar groups on the core, an `ld` of
    the phase's constant tables from global memory to the top of local memory (the
    phases' tables share that space, so each phase has all of local memory, as a model
    of one phase has), the phase's code (its images one after the other through the
    phase's pipeline), then a `sync`, so that no core starts the next phase
    (overwriting crossbars, tables and buffers, loading spilled tensors) before every
    core has finished this one."""
    used = sorted({c for plan in plans for c in plan.order})
    cores = {c: CoreCode(c, target.local_memory_bytes) for c in used}
    tables: list[tuple[int, bytes]] = []
    for number, (phase, plan) in enumerate(zip(phases, plans, strict=True)):
        codes = {c: CoreCode(c, target.local_memory_bytes) for c in plan.order}
        lines = code_lines(phase, target, plan, codes, f"p{number}")
        groups: dict[int, set[int]] = {}  # (blocks of equal weights may share a group)
        for op in phase.ops():
            if op.kind == "matvec":
                for core, group in zip(op.attrs["block_cores"], op.attrs["block_groups"],
                                       strict=True):
                    groups.setdefault(int(core), set()).add(int(group))
        for core, joined in cores.items():
            joined.lines.append(f"# phase {number}")
            joined.lines += [f"wprog {g}" for g in sorted(groups.get(core, []))]
            code = codes.get(core)
            if code is not None:
                check_memory(code, target)
                joined.top, joined.peak = min(joined.top, code.top), max(joined.peak, code.peak)
                if code.data:
                    low = min(address for address, _ in code.data)
                    blob = bytearray(target.local_memory_bytes - low)
                    for address, words in code.data:
                        blob[address - low:address - low + 4 * len(words)] = packed(words)
                    tables.append((base, bytes(blob)))
                    joined.lines.append(f"ld {low}(r0), {base}(r0), {len(blob)}")
                    base += -(-len(blob) // ALIGN) * ALIGN
                joined.lines += lines[core]
            joined.lines.append("sync" if number + 1 < len(plans) else "halt")
    return cores, tables


def packed(words: list[int]) -> bytes:
    """Table words as memory holds them: little-endian 32-bit (negative ones wrapped)."""
    return np.asarray(words, dtype=np.int64).astype("<u4").tobytes()


def code_lines(module: Module, target: Target, plan: Plan, cores: dict[int, CoreCode],
               prefix: str) -> dict[int, list[str]]:
    """The lines of each core's tasks in `plan` (without the final halt), their buffers
    and tables taken from `cores`; labels start with `prefix`."""
    unit_core = unit_cores(module)
    writers: dict[tuple[int, int], Part] = {}
    for gi, group in enumerate(plan.groups):
        for core in group.cores:
            writers[(core, gi)] = Part(module, target, group, cores[core], unit_core, prefix)
    return {core: reroll([writers[(core, gi)].row(m, oy) for m, gi, oy in tasks],
                         f"{prefix}c{core}")
            for core, tasks in plan.order.items()}


def check_memory(code: CoreCode, target: Target) -> None:
    """CimcError when a core's buffers and tables overlap (local memory overflows)."""
    if code.peak > code.top:
        need = code.peak + target.local_memory_bytes - code.top
        tables = target.local_memory_bytes - code.top - code.kept
        raise CimcError(f"core {code.core} needs {need} bytes of local memory but target "
                        f"{target.name!r} has {target.local_memory_bytes} ({code.kept} bytes "
                        f"in the bands {code.bands} parts keep for the run, {tables} in "
                        f"constant tables, {code.peak} of scratch); choose a target with "
                        "more local memory (or more cores, for the placer to spread the parts "
                        "over)")


def addr(module: Module, value: str, image: int = 0) -> int:
    """Global address of a runtime tensor (set by schedule on its producer), of image
    `image` of a batch: a tensor spilled between phases has a slot per image
    (`image_stride`), the others one for all."""
    producer = module.producer(value)
    if producer is None or "addr" not in producer.attrs:
        raise CimcError(f"value {value!r} has no global address; run the schedule pass")
    return int(producer.attrs["addr"]) + image * int(producer.attrs.get("image_stride", 0))


def _dtype(module: Module, value: str) -> str:
    return module.values[value].dtype


class Part:
    """The code of one group on one core, row by row, with its buffers."""

    def __init__(self, module: Module, target: Target, group: Group, code: CoreCode,
                 unit_core: dict[str, int], prefix: str = "") -> None:
        self.module, self.target, self.group, self.code = module, target, group, code
        op = group.op
        self.op = op
        self.label = f"{prefix}g{group.layer}r{group.replica}"
        self.oh, self.ow, self.n = image_dims(module.values[op.outputs[0]])
        self.out_type = _dtype(module, op.outputs[0])
        self.output = chip_stores(module, op.outputs[0])
        self.count = 0  # labels
        core = code.core
        code.begin_part()
        # Output row buffer: all channels, pixel-major (a core fills the columns it reduces).
        self.out = code.take(self.ow * self.n)
        self.ranges = column_ranges(module, op)
        self.columns = [j for j, c in sorted(group.reducers.items()) if c == core] \
            if op.kind == "matvec" else [0]
        # Staging: channel slices of rows sent or received (whole rows go in place).
        slice_row = self.ow * max((self.ranges[j][1] - self.ranges[j][0] for j in self.columns
                                   if self.ranges[j][1] - self.ranges[j][0] != self.n),
                                  default=0)
        self.stage = code.take(max(self._widest_piece(), slice_row, 1))
        if op.kind in ("matvec", "pool"):
            self.win = Window.of(module, op)
            steps = band_plan(self.win, group.rows)
            fresh = transient(self.win, steps)
            self.band = code.take(self.win.band_bytes) if fresh \
                else code.keep(self.win.band_bytes)
            self.window = None if self.win.contiguous else code.take(self.win.window_bytes)
            self.steps = {s.oy: s for s in steps}
            received = [(p.lo, p.hi) for rows in group.recvs[core][0] for p in rows]
            self.band_channels = (min((lo for lo, _ in received), default=0),
                                  max((hi for _, hi in received), default=self.win.c))
            x = op.inputs[0]
            self.in_type = _dtype(module, x)
            self.init = [] if fresh else \
                [f"fill {self.band}(r0), {self._pad()}, {self.win.band_bytes}"]
        else:
            self.init = []
        self.setup = {"matvec": self._matvec_setup, "pool": self._pool_setup,
                      "eltwise": self._eltwise_setup, "rescale": self._rescale_setup,
                      "scale": self._scale_setup, "product": self._product_setup,
                      "dot": self._dot_setup, "pixel_softmax": self._softmax_setup,
                      "pixel_layernorm": self._layernorm_setup,
                      "join": self._join_setup, "gather": self._gather_setup}[op.kind]
        self.body: Callable[[int, int], list[str]] = self.setup(unit_core)
        self.index = {oy: t for t, oy in enumerate(group.rows)}

    # -- helpers --------------------------------------------------------------------------

    def _widest_piece(self) -> int:
        """The widest received piece that needs staging (`_receive`: all channels of a row
        land in place, except in a join)."""
        widest = 0
        for k, per_operand in self.group.recvs.get(self.code.core, {}).items():
            _, w, c = image_dims(self.module.values[self.op.inputs[k]])
            in_place = self.op.kind in ("matvec", "pool", "dot") or (
                self.op.kind != "join" and c == self.n)
            for pieces in per_operand:
                for p in pieces:
                    if in_place and (p.core is None or p.hi - p.lo == c):
                        continue
                    widest = max(widest, w * (p.hi - p.lo))
        return widest

    def _pad(self) -> int:
        op = self.op
        x = op.inputs[0]
        if op.kind == "pool" and op.attrs["mode"] == "max":
            return -128 if _dtype(self.module, x) == "i8" else 0
        return int(self.module.values[x].quant.zero_point[0])  # type: ignore[union-attr]

    def _receive(self, pieces: list[Recv], value: str, dst: int, stride: int, offset: int,
                 image: int) -> list[str]:
        """Code receiving row pieces of `value` into a row at `dst` (pixel stride `stride`
        bytes, channel offset `offset`)."""
        _, w, c = image_dims(self.module.values[value])
        lines = []
        for p in pieces:
            size = w * (p.hi - p.lo)
            if p.core is None:
                base = addr(self.module, value, image) + p.iy * w * c
                if stride == c and offset == 0:
                    lines.append(f"ld {dst}(r0), {base}(r0), {w * c}")
                else:
                    lines += [f"ld {self.stage}(r0), {base}(r0), {w * c}",
                              f"copy {dst + offset}(r0), {self.stage}(r0), {c}, {w}, "
                              f"{stride}, {c}"]
                continue
            if p.hi - p.lo == stride and offset == 0:
                lines.append(f"recv {p.core}, {dst}(r0), {size}, {p.tag}")
            else:
                lines += [f"recv {p.core}, {self.stage}(r0), {size}, {p.tag}",
                          f"copy {dst + offset + p.lo}(r0), {self.stage}(r0), {p.hi - p.lo}, "
                          f"{w}, {stride}, {p.hi - p.lo}"]
        return lines

    def _band(self, m: int, oy: int) -> list[str]:
        win, step = self.win, self.steps[oy]
        rb = win.wp * win.c
        lines = []
        pieces = self.group.recvs[self.code.core][0][self.index[oy]]
        if step.kept and step.moved:
            lo, hi = self.band_channels
            if (lo, hi) == (0, win.c):
                lines.append(f"copy {self.band}(r0), {self.band + step.moved * rb}(r0), {rb}, "
                             f"{step.kept}, {rb}, {rb}")
            else:  # only the channels this part receives (the others are never read)
                lines.append(f"copy {self.band + lo}(r0), {self.band + step.moved * rb + lo}(r0), "
                             f"{hi - lo}, {step.kept * win.wp}, {win.c}, {win.c}")
        x = self.op.inputs[0]
        for slot, iy in step.fills:
            dst = self.band + slot * rb + win.pl * win.c
            if iy is None:
                lines.append(f"fill {dst}(r0), {self._pad()}, {win.w * win.c}")
            else:
                lines += self._receive([p for p in pieces if p.iy == iy], x, dst, win.c, 0, m)
        return lines

    def _finish(self, m: int, oy: int) -> list[str]:
        """Send the row's reduced columns to their consumers; store model outputs."""
        lines = []
        for j in self.columns:
            lo, hi = self.ranges[j]
            whole = hi - lo == self.n
            src = self.out
            if not whole:
                src = self.stage
            dests = self.group.sends.get(j, {}).get(oy, [])
            if dests and not whole:
                lines.append(f"copy {self.stage}(r0), {self.out + lo}(r0), {hi - lo}, "
                             f"{self.ow}, {hi - lo}, {self.n}")
            for core, tag in dests:
                lines.append(f"send {core}, {src}(r0), {self.ow * (hi - lo)}, {tag}")
            if self.output:
                base = addr(self.module, self.op.outputs[0], m) + oy * self.ow * self.n
                if whole or self.ow == 1:
                    lines.append(f"st {base + lo}(r0), {self.out + lo}(r0), {self.ow * (hi - lo)}")
                else:
                    lines += [f"st {base + px * self.n + lo}(r0), "
                              f"{self.out + px * self.n + lo}(r0), {hi - lo}"
                              for px in range(self.ow)]
        return lines

    def _pixels(self, step: list[str], start: int | None = None, count: int = 1
                ) -> list[str]:
        """A loop over the output pixels of a row, or over `count` of them from `start`
        (one pixel has no loop): r2 band pixel, r3 output pixel."""
        lines = [f"li r2, {self.band + (start or 0) * self.win.sw * self.win.c}",
                 f"li r3, {self.out + (start or 0) * self.n}"]
        if start is None:
            count = self.ow
        elif count == 1:
            return lines + step
        self.count += 1
        tag = f"{self.label}_{self.count}"
        lines += ["li r4, 0", f"li r5, {count}", f"{tag}:"]
        lines += step
        lines += [f"addi r2, r2, {self.win.sw * self.win.c}", f"addi r3, r3, {self.n}",
                  "addi r4, r4, 1", f"blt r4, r5, {tag}"]
        return lines

    def _pipelined(self, issue: list[str], reduce: list[str], bank: int) -> list[str]:
        """The pixels of a row, software-pipelined: `issue` (gather, MVMs into bank r6)
        for pixel p, then `reduce` (partial sums of bank r1 to the output pixel at r3) for
        pixel p - 1, so the crossbars work while the core reduces. r2 band pixel, r3
        output pixel, r4 counter, r5 limit, r7 the bank distance."""
        self.count += 1
        tag = f"{self.label}_{self.count}"
        lines = [f"li r2, {self.band}", f"li r3, {self.out}", "li r6, 0", f"li r7, {bank}"]
        lines += issue
        if self.ow > 1:
            lines += ["li r4, 1", f"li r5, {self.ow}", f"{tag}:", "addi r1, r6, 0",
                      "sub r6, r7, r6", f"addi r2, r2, {self.win.sw * self.win.c}"]
            lines += issue + reduce
            lines += [f"addi r3, r3, {self.n}", "addi r4, r4, 1", f"blt r4, r5, {tag}"]
        return lines + ["addi r1, r6, 0"] + reduce

    def row(self, m: int, oy: int) -> list[str]:
        """The code of output row `oy` of image `m`."""
        lines = [f"# {comment_text(self.group.name)} row {oy}" + (f" image {m}" if m else "")]
        if self.init:
            lines += self.init
            self.init = []
        return lines + self.body(m, oy)

    # -- matvec -----------------------------------------------------------------------------

    def _matvec_setup(self, unit_core: dict[str, int]) -> Callable[[int, int], list[str]]:
        op, group, code, module = self.op, self.group, self.code, self.module
        core = code.core
        rows, width = op.attrs["block_rows"], op.attrs["block_cols"]
        mine = [(i, j, op.attrs["block_groups"][group.replica * len(blocks_of(op)) + k])
                for k, (i, j) in enumerate(blocks_of(op))
                if unit_core[block_name(op, group.replica, i, j)] == core]
        bias, table = module.constants[op.inputs[2]], module.constants[op.inputs[3]]
        xt, yt = self.in_type, self.out_type
        # Two banks of partial sums (r6: the bank of the window being multiplied, r1: the
        # previous window's), so a window's MVMs run while the previous one is reduced.
        psum = {j: code.take(4 * width) for j in sorted({j for _, j, _ in mine})}
        first = min(psum.values())
        bank = code.take(max(psum.values()) + 4 * width - first) - first
        tmp = code.take(4 * width)
        consts = {j: (code.table(bias[slice(*self.ranges[j])]),
                      code.table(table[slice(*self.ranges[j])])) for j in self.columns}
        lut = self._lut()
        senders = {j: sorted({unit_core[block_name(op, group.replica, i, jj)]
                              for i, jj in blocks_of(op) if jj == j} - {core})
                   for j in self.columns}
        src, reg = (0, "r2") if self.window is None else (self.window, "r0")
        # Gather only the window rows this core's blocks multiply.
        k = module.values[op.inputs[1]].shape[0]
        needed = (min(i * rows for i, _, _ in mine),
                  max(min(k, (i + 1) * rows) for i, _, _ in mine))
        issue = self.win.gather(self.window, needed) if self.window is not None else []
        for j in sorted(psum):
            ours = [(i, g) for i, jj, g in mine if jj == j]
            for k, (i, g) in enumerate(ours):
                mnemonic = f"mvm.{xt}" if k == 0 else f"mvm.acc.{xt}"
                issue.append(f"{mnemonic} {g}, {psum[j]}(r6), {src + i * rows}({reg})")
        reduce = []
        for j in sorted(psum):
            if group.reducers[j] != core:
                lo, hi = self.ranges[j]
                reduce.append(f"send {group.reducers[j]}, {psum[j]}(r1), {4 * (hi - lo)}, "
                              f"{group.psum_tags[j]}")
        for j in self.columns:
            lo, hi = self.ranges[j]
            n, acc = hi - lo, psum[j]
            for other in senders[j]:
                reduce += [f"recv {other}, {tmp}(r0), {4 * n}, {group.psum_tags[j]}",
                           f"vadd.i32 {acc}(r1), {acc}(r1), {tmp}(r0), {n}"]
            b, t = consts[j]
            reduce += [f"vadd.i32 {acc}(r1), {acc}(r1), {b}(r0), {n}",
                       f"requant.{yt} {lo}(r3), {acc}(r1), {n}, {t}(r0)"]
            if lut is not None:
                reduce.append(f"vlut.{yt} {lo}(r3), {lo}(r3), {n}, {lut}(r0)")

        def body(m: int, oy: int) -> list[str]:
            return (self._band(m, oy) + self._pipelined(issue, reduce, bank)
                    + self._finish(m, oy))

        return body

    # -- pool -------------------------------------------------------------------------------

    def _pool_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        a, win, code = self.op.attrs, self.win, self.code
        xt, yt = self.in_type, self.out_type
        acc = code.take(4 * win.c)
        src = "0(r2)" if self.window is None else f"{self.window}(r0)"
        count = win.kh * win.kw
        info = np.iinfo(np.dtype(np.int8 if xt == "i8" else np.uint8))
        if a["mode"] == "max":
            step = [f"vredmax.{xt} 0(r3), {src}, {win.c}, {count}, {win.c}"]
            if a["lo"] > info.min:
                step.append(f"vmaxi.{xt} 0(r3), 0(r3), {a['lo']}, {win.c}")
            if a["hi"] < info.max:
                step.append(f"vmini.{xt} 0(r3), 0(r3), {a['hi']}, {win.c}")
        else:
            def average(mant: int, shift: int) -> list[str]:
                entry = [mant, shift, a["zy"], a["lo"], a["hi"]]
                table = code.table(np.tile(np.asarray(entry, dtype=np.int64), win.c))
                return [f"vredsum.{xt} {acc}(r0), {src}, {win.c}, {count}, {win.c}",
                        f"vaddi.i32 {acc}(r0), {acc}(r0), {a['offset']}, {win.c}",
                        f"requant.{yt} 0(r3), {acc}(r0), {win.c}, {table}(r0)"]
            step = average(a["M"], a["shift"])
            # Border windows that average fewer positions: one step per divisor.
            by_divisor = {d: average(mant, shift) for d, mant, shift in zip(
                a.get("divisors", []), a.get("divisor_M", []), a.get("divisor_shift", []),
                strict=True)}
        lut = self._lut()
        gather = win.gather(self.window) if self.window is not None else []
        tail = [] if lut is None else [f"vlut.{yt} 0(r3), 0(r3), {win.c}, {lut}(r0)"]
        step = gather + step + tail

        def body(m: int, oy: int) -> list[str]:
            if a["mode"] == "max" or "divisors" not in a:
                pixels = self._pixels(step)
            else:
                divisors = [a["row_extents"][oy] * e for e in a["col_extents"]]
                pixels = []
                for start, stop, divisor in pixel_runs(divisors):
                    pixels += self._pixels(gather + by_divisor[divisor] + tail, start,
                                           stop - start)
            return self._band(m, oy) + pixels + self._finish(m, oy)

        return body

    # -- element-wise -----------------------------------------------------------------------

    def _rows_in(self, k: int, m: int, oy: int, dst: int, stride: int, offset: int
                 ) -> list[str]:
        pieces = self.group.recvs[self.code.core][k][self.index[oy]]
        return self._receive(pieces, self.op.inputs[k], dst, stride, offset, m)

    def _chunks(self, total: int, pointers: list[int], body: Callable[[int], list[str]]
                ) -> list[str]:
        """body(n) over `total` elements in chunks of CHUNK; byte pointers in r1, r2, ...
        (all advance by the chunk)."""
        lines = [f"li r{k + 1}, {p}" for k, p in enumerate(pointers)]
        full, rest = divmod(total, CHUNK)
        if full > 1:
            self.count += 1
            tag = f"{self.label}_{self.count}"
            lines += ["li r6, 0", f"li r7, {full}", f"{tag}:"]
            lines += body(CHUNK)
            lines += [f"addi r{k + 1}, r{k + 1}, {CHUNK}" for k in range(len(pointers))]
            lines += ["addi r6, r6, 1", f"blt r6, r7, {tag}"]
        elif full == 1:
            lines += body(CHUNK)
            lines += [f"addi r{k + 1}, r{k + 1}, {CHUNK}" for k in range(len(pointers))]
        if rest:
            lines += body(rest)
        return lines

    def _eltwise_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        a, code, module = self.op.attrs, self.code, self.module
        (x1, x2), ty = self.op.inputs[:2], self.out_type
        t1, t2 = _dtype(module, x1), _dtype(module, x2)
        total = self.ow * self.n
        chunk = min(total, CHUNK)
        row_a, row_b = code.take(total), code.take(total)
        w1, w2 = code.take(4 * chunk), code.take(4 * chunk)
        table = code.table(np.tile(np.asarray([1, a["shift"], a["zy"], a["lo"], a["hi"]],
                                              dtype=np.int64), chunk))
        lut = self._lut()

        def chunk_code(n: int) -> list[str]:
            return [f"vscale.{t1} {w1}(r0), 0(r1), {n}, {a['za']}, {a['ma']}",
                    f"vscale.{t2} {w2}(r0), 0(r2), {n}, {a['zb']}, {a['mb']}",
                    f"vadd.i32 {w1}(r0), {w1}(r0), {w2}(r0), {n}",
                    f"requant.{ty} 0(r3), {w1}(r0), {n}, {table}(r0)"] + (
                        [] if lut is None else [f"vlut.{ty} 0(r3), 0(r3), {n}, {lut}(r0)"])

        def body(m: int, oy: int) -> list[str]:
            lines = self._rows_in(0, m, oy, row_a, self.n, 0)
            lines += self._rows_in(1, m, oy, row_b, self.n, 0)
            lines += self._chunks(total, [row_a, row_b, self.out], chunk_code)
            return lines + self._finish(m, oy)

        return body

    def _rescale_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        a, code = self.op.attrs, self.code
        tx, ty = _dtype(self.module, self.op.inputs[0]), self.out_type
        total = self.ow * self.n
        chunk = min(total, CHUNK)
        row_in, wide = code.take(total), code.take(4 * chunk)
        table = 0
        if a["M"]:
            table = code.table(np.tile(np.asarray([a["M"], a["shift"], a["zy"], a["lo"],
                                                   a["hi"]], dtype=np.int64), chunk))
        lut = self._lut()

        def chunk_code(n: int) -> list[str]:
            if a["M"]:
                lines = [f"vscale.{tx} {wide}(r0), 0(r1), {n}, {a['zx']}, 1",
                         f"requant.{ty} 0(r2), {wide}(r0), {n}, {table}(r0)"]
            elif lut is None or rescale_clamps(self.module, self.op):
                lines = [f"vmaxi.{tx} 0(r2), 0(r1), {a['lo']}, {n}",
                         f"vmini.{tx} 0(r2), 0(r2), {a['hi']}, {n}"]
            else:  # only the lookup: it reads the operand's codes
                return [f"vlut.{ty} 0(r2), 0(r1), {n}, {lut}(r0)"]
            if lut is not None:
                lines.append(f"vlut.{ty} 0(r2), 0(r2), {n}, {lut}(r0)")
            return lines

        def body(m: int, oy: int) -> list[str]:
            lines = self._rows_in(0, m, oy, row_in, self.n, 0)
            lines += self._chunks(total, [row_in, self.out], chunk_code)
            return lines + self._finish(m, oy)

        return body

    def _scale_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        """x * factors[channel] (+ offsets[channel]), requantized: a loop over the row's
        pixels (r1 input, r2 output), the channels of a pixel at once."""
        a, code, c = self.op.attrs, self.code, self.n
        tx, ty = _dtype(self.module, self.op.inputs[0]), self.out_type
        row_in, wide = code.take(self.ow * c), code.take(4 * c)
        factors = code.table(self.module.constants[self.op.inputs[1]])
        table = code.table(np.tile(np.asarray([a["M"], a["shift"], a["zy"], a["lo"], a["hi"]],
                                              dtype=np.int64), c))
        lut = self._lut()

        pixel = [f"vscale.{tx} {wide}(r0), 0(r1), {c}, {a['zx']}, 1",
                 f"vmul.i32 {wide}(r0), {wide}(r0), {factors}(r0), {c}"]
        if a.get("offsets"):
            offsets = code.table(self.module.constants[self.op.inputs[2]])
            pixel.append(f"vadd.i32 {wide}(r0), {wide}(r0), {offsets}(r0), {c}")
        pixel.append(f"requant.{ty} 0(r2), {wide}(r0), {c}, {table}(r0)")
        if lut is not None:
            pixel.append(f"vlut.{ty} 0(r2), 0(r2), {c}, {lut}(r0)")
        return lambda m, oy: self._each_pixel(m, oy, row_in, c, pixel)

    def _product_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        """(a - za) * (b - zb), requantized. Two whole rows of all channels: in chunks (r1
        a, r2 b, r3 output). Otherwise a loop over the row's pixels (r1 a's pixel, r3 b's,
        r2 output, r4/r5 counter): an operand of one pixel (a [1,C,1,1] gate) is centered
        once per row; an operand of one channel (a [1,1,H,W] spatial gate) is spread over
        the channels (`copy` with source stride 0) before it is centered."""
        a, code, module, n = self.op.attrs, self.code, self.module, self.n
        values = self.op.inputs[:2]
        types = [_dtype(module, v) for v in values]
        dims = [image_dims(module.values[v]) for v in values]
        widths, channels = [w for _, w, _ in dims], [c for _, _, c in dims]
        zeros, ty, lut = (a["za"], a["zb"]), self.out_type, self._lut()
        rows = [code.take(w * c) for w, c in zip(widths, channels, strict=True)]
        entry = np.asarray([a["M"], a["shift"], a["zy"], a["lo"], a["hi"]], dtype=np.int64)
        if widths[0] == widths[1] and channels[0] == channels[1]:
            total = self.ow * n
            chunk = min(total, CHUNK)
            wide = [code.take(4 * chunk), code.take(4 * chunk)]
            table = code.table(np.tile(entry, chunk))

            def chunk_code(size: int) -> list[str]:
                return [*(f"vscale.{types[k]} {wide[k]}(r0), 0(r{k + 1}), {size}, {zeros[k]}, 1"
                          for k in (0, 1)),
                        f"vmul.i32 {wide[0]}(r0), {wide[0]}(r0), {wide[1]}(r0), {size}",
                        f"requant.{ty} 0(r3), {wide[0]}(r0), {size}, {table}(r0)"] + (
                            [] if lut is None else [f"vlut.{ty} 0(r3), 0(r3), {size}, {lut}(r0)"])

            def body(m: int, oy: int) -> list[str]:
                lines = self._rows_in(0, m, oy, rows[0], n, 0)
                lines += self._rows_in(1, m, oy, rows[1], n, 0)
                lines += self._chunks(total, [rows[0], rows[1], self.out], chunk_code)
                return lines + self._finish(m, oy)

            return body
        wide = [code.take(4 * n), code.take(4 * n)]
        spread = [code.take(n) if c == 1 < n else None for c in channels]
        table = code.table(np.tile(entry, n))
        moving = [w == self.ow and self.ow > 1 for w in widths]  # else one pixel per row
        pointer = ("r1", "r3")

        def centered(k: int, at: str) -> list[str]:
            """Operand k's pixel at `at`, centered into wide[k] (spread first if needed)."""
            lines = []
            if spread[k] is not None:
                lines.append(f"copy {spread[k]}(r0), {at}, 1, {n}, 1, 0")
                at = f"{spread[k]}(r0)"
            return lines + [f"vscale.{types[k]} {wide[k]}(r0), {at}, {n}, {zeros[k]}, 1"]

        def pixels(m: int, oy: int) -> list[str]:
            self.count += 1
            tag = f"{self.label}_{self.count}"
            lines = self._rows_in(0, m, oy, rows[0], channels[0], 0)
            lines += self._rows_in(1, m, oy, rows[1], channels[1], 0)
            for k in (0, 1):
                if not moving[k]:
                    lines += centered(k, f"{rows[k]}(r0)")
            lines += [f"li {pointer[k]}, {rows[k]}" for k in (0, 1) if moving[k]]
            lines += [f"li r2, {self.out}", "li r4, 0", f"li r5, {self.ow}", f"{tag}:"]
            for k in (0, 1):
                if moving[k]:
                    lines += centered(k, f"0({pointer[k]})")
            lines += [f"vmul.i32 {wide[0]}(r0), {wide[0]}(r0), {wide[1]}(r0), {n}",
                      f"requant.{ty} 0(r2), {wide[0]}(r0), {n}, {table}(r0)"]
            if lut is not None:
                lines.append(f"vlut.{ty} 0(r2), 0(r2), {n}, {lut}(r0)")
            lines += [f"addi {pointer[k]}, {pointer[k]}, {channels[k]}" for k in (0, 1)
                      if moving[k]]
            lines += [f"addi r2, r2, {n}", "addi r4, r4, 1", f"blt r4, r5, {tag}"]
            return lines + self._finish(m, oy)

        return pixels

    def _dot_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        """Σ_k (a[m,k] - za)(b[n,k] - zb), requantized (passes/lower/attention.py): b's
        centered values once per row (transposed in place into rows of K when b is given
        as [K, N], `rows` = 0), then per output pixel m (r1 a, r2 output, r4/r5 counter)
        and column n (r3 b's row n, r6 the i32 sum, r7 columns left) a `vmul.i32` and a
        `vredsum.i32` of K elements, and one `requant` of the pixel's N sums."""
        a, code, module, n = self.op.attrs, self.code, self.module, self.n
        (x1, x2), ty = self.op.inputs, self.out_type
        t1, t2 = _dtype(module, x1), _dtype(module, x2)
        pixels_b, channels_b = image_dims(module.values[x2])[1:]
        depth = image_dims(module.values[x1])[2]
        row_a, row_b = code.take(self.ow * depth), code.take(pixels_b * channels_b)
        wa, tmp = code.take(4 * depth), code.take(4 * depth)
        wb = code.take(4 * pixels_b * channels_b)
        rows = wb if a["rows"] else code.take(4 * n * depth)
        acc = code.take(4 * n)
        table = code.table(np.tile(np.asarray([a["M"], a["shift"], a["zy"], a["lo"], a["hi"]],
                                              dtype=np.int64), n))

        def body(m: int, oy: int) -> list[str]:
            self.count += 1
            outer, inner = f"{self.label}_{self.count}", f"{self.label}_{self.count}i"
            lines = self._rows_in(0, m, oy, row_a, depth, 0)
            lines += self._rows_in(1, m, oy, row_b, channels_b, 0)
            lines.append(f"vscale.{t2} {wb}(r0), {row_b}(r0), {pixels_b * channels_b}, "
                         f"{a['zb']}, 1")
            if not a["rows"]:  # column j of b [K, N] becomes row j
                lines += [f"copy {rows + 4 * j * depth}(r0), {wb + 4 * j}(r0), 4, {depth}, 4, "
                          f"{4 * n}" for j in range(n)]
            lines += [f"li r1, {row_a}", f"li r2, {self.out}", "li r4, 0", f"li r5, {self.ow}",
                      f"{outer}:",
                      f"vscale.{t1} {wa}(r0), 0(r1), {depth}, {a['za']}, 1",
                      f"li r3, {rows}", f"li r6, {acc}", f"li r7, {n}",
                      f"{inner}:",
                      f"vmul.i32 {tmp}(r0), {wa}(r0), 0(r3), {depth}",
                      f"vredsum.i32 0(r6), {tmp}(r0), 1, {depth}, 1",
                      f"addi r3, r3, {4 * depth}", "addi r6, r6, 4", "addi r7, r7, -1",
                      f"bne r7, r0, {inner}",
                      f"requant.{ty} 0(r2), {acc}(r0), {n}, {table}(r0)",
                      f"addi r1, r1, {depth}", f"addi r2, r2, {n}", "addi r4, r4, 1",
                      f"blt r4, r5, {outer}"]
            return lines + self._finish(m, oy)

        return body

    def _softmax_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        """Each pixel's softmax over its n channels (cimc/reference/softmax.py), a loop over
        the row's pixels (r1 input, r2 output): i8 codes first become order-kept u8 codes
        (a lookup flipping the sign bit), so that max - x is a byte index; E[max - x] from
        two byte tables, the row sum times 2^8 spread over the pixel, e * P / that sum
        (`vdiv.i32`), the zero point and clamp by `requant` with M = 1."""
        a, code, n = self.op.attrs, self.code, self.n
        tx, ty = _dtype(self.module, self.op.inputs[0]), self.out_type
        table = self.module.constants[self.op.inputs[1]].astype(np.int64)
        high = code.byte_table((table >> 8).astype(np.uint8))
        low = code.byte_table((table & 255).astype(np.uint8))
        flip = code.byte_table((np.arange(256) ^ 128).astype(np.uint8)) if tx == "i8" else None
        factors = code.table(np.full(n, a["P"], dtype=np.int64))
        finish = code.table(np.tile(np.asarray([1 << 30, 30, a["zy"], a["lo"], a["hi"]],
                                               dtype=np.int64), n))
        row_in = code.take(self.ow * n)
        codes, peak, spread, index, hi_b, lo_b = (code.take(n), code.take(16), code.take(n),
                                                  code.take(n), code.take(n), code.take(n))
        e, part, total, totals = (code.take(4 * n), code.take(4 * n), code.take(16),
                                  code.take(4 * n))

        pixel: list[str] = []
        src = "0(r1)"
        if flip is not None:
            pixel.append(f"vlut.u8 {codes}(r0), 0(r1), {n}, {flip}(r0)")
            src = f"{codes}(r0)"
        pixel += [f"vredmax.u8 {peak}(r0), {src}, 1, {n}, 1",
                  f"copy {spread}(r0), {peak}(r0), 1, {n}, 1, 0",
                  f"vsub.u8 {index}(r0), {spread}(r0), {src}, {n}",
                  f"vlut.u8 {hi_b}(r0), {index}(r0), {n}, {high}(r0)",
                  f"vlut.u8 {lo_b}(r0), {index}(r0), {n}, {low}(r0)",
                  f"vscale.u8 {e}(r0), {hi_b}(r0), {n}, 0, 256",
                  f"vscale.u8 {part}(r0), {lo_b}(r0), {n}, 0, 1",
                  f"vadd.i32 {e}(r0), {e}(r0), {part}(r0), {n}",
                  f"vredsum.i32 {total}(r0), {e}(r0), 1, {n}, 1",
                  f"vshl.i32 {total}(r0), {total}(r0), 8, 1",
                  f"copy {totals}(r0), {total}(r0), 4, {n}, 4, 0",
                  f"vmul.i32 {e}(r0), {e}(r0), {factors}(r0), {n}",
                  f"vdiv.i32 {e}(r0), {e}(r0), {totals}(r0), {n}",
                  f"requant.{ty} 0(r2), {e}(r0), {n}, {finish}(r0)"]
        return lambda m, oy: self._each_pixel(m, oy, row_in, n, pixel)

    def _layernorm_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        """Each pixel's LayerNorm over its n channels (cimc/reference/layer_norm.py), a loop
        over the row's pixels (r1 input, r2 output): c = x - zx, S1 and S2 = Σ c² by
        `vredsum`, V = n·S2 - S1² and Q = max(V·2^m + e, floor) on one element (n·S2 and S1²
        may wrap, V does not), R = `visqrt` Q, S1 and R spread over the pixel by `copy`s
        with source stride 0, (n·c - S1)·R, `vshr` by a, + B, `requant` by the table."""
        a, code, n = self.op.attrs, self.code, self.n
        tx, ty = _dtype(self.module, self.op.inputs[0]), self.out_type
        bias = code.table(self.module.constants[self.op.inputs[1]])
        finish = code.table(self.module.constants[self.op.inputs[2]])
        width = code.table(np.asarray([n], dtype=np.int64))
        row_in = code.take(self.ow * n)
        c, u, spread = code.take(4 * n), code.take(4 * n), code.take(4 * n)
        s1, s2, v = code.take(16), code.take(16), code.take(16)
        zx = a["zx"]

        pixel = [f"vscale.{tx} {c}(r0), 0(r1), {n}, {zx}, 1",
                 f"vredsum.i32 {s1}(r0), {c}(r0), 1, {n}, 1",
                 f"vmul.i32 {c}(r0), {c}(r0), {c}(r0), {n}",
                 f"vredsum.i32 {s2}(r0), {c}(r0), 1, {n}, 1",
                 f"vmul.i32 {s2}(r0), {s2}(r0), {width}(r0), 1",
                 f"vmul.i32 {v}(r0), {s1}(r0), {s1}(r0), 1",
                 f"vsub.i32 {v}(r0), {s2}(r0), {v}(r0), 1"]
        if a["m"]:
            pixel.append(f"vshl.i32 {v}(r0), {v}(r0), {a['m']}, 1")
        if a["e"]:
            pixel.append(f"vaddi.i32 {v}(r0), {v}(r0), {a['e']}, 1")
        pixel += [f"vmaxi.i32 {v}(r0), {v}(r0), {a['floor']}, 1",
                  f"visqrt.i32 {v}(r0), {v}(r0), {a['k']}, 1",
                  f"copy {spread}(r0), {s1}(r0), 4, {n}, 4, 0",
                  f"vscale.{tx} {u}(r0), 0(r1), {n}, {zx}, {n}",
                  f"vsub.i32 {u}(r0), {u}(r0), {spread}(r0), {n}",
                  f"copy {spread}(r0), {v}(r0), 4, {n}, 4, 0",
                  f"vmul.i32 {u}(r0), {u}(r0), {spread}(r0), {n}"]
        if a["a"]:
            pixel.append(f"vshr.i32 {u}(r0), {u}(r0), {a['a']}, {n}")
        pixel += [f"vadd.i32 {u}(r0), {u}(r0), {bias}(r0), {n}",
                  f"requant.{ty} 0(r2), {u}(r0), {n}, {finish}(r0)"]
        return lambda m, oy: self._each_pixel(m, oy, row_in, n, pixel)

    def _each_pixel(self, m: int, oy: int, row_in: int, n: int, pixel: list[str]
                    ) -> list[str]:
        """Output row `oy` of image `m` of a part that works pixel by pixel: the input row
        received into `row_in`, a loop running `pixel` on each pixel's `n` input codes
        (at r1) and output codes (at r2), the row sent on."""
        self.count += 1
        tag = f"{self.label}_{self.count}"
        return [*self._rows_in(0, m, oy, row_in, n, 0),
                f"li r1, {row_in}", f"li r2, {self.out}", "li r4, 0", f"li r5, {self.ow}",
                f"{tag}:", *pixel,
                f"addi r1, r1, {n}", f"addi r2, r2, {n}", "addi r4, r4, 1",
                f"blt r4, r5, {tag}", *self._finish(m, oy)]

    def _lut(self) -> int | None:
        """The address of the op's lookup table in this core's `.data`, if it has one."""
        name = lut_table(self.module, self.op)
        return None if name is None else self.code.byte_table(self.module.constants[name])

    def _join_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        channels = [image_dims(self.module.values[v])[2] for v in self.op.inputs]
        offsets = np.cumsum([0, *channels]).tolist()

        def body(m: int, oy: int) -> list[str]:
            lines = []
            for k in range(len(channels)):
                lines += self._rows_in(k, m, oy, self.out, self.n, int(offsets[k]))
            return lines + self._finish(m, oy)

        return body

    def _gather_setup(self, _: dict[str, int]) -> Callable[[int, int], list[str]]:
        """Data movement (cimc/analysis/gather.py): refresh each operand's band, then one
        `vgather` of the output row through its table of band offsets (or a `fill`)."""
        geo, code, ty = geometry(self.module, self.op), self.code, self.out_type
        band = 0
        if geo.band_bytes:
            band = code.take(geo.band_bytes) if geo.transient(self.group.rows) \
                else code.keep(geo.band_bytes)
        tables = [code.table(t) for t in geo.tables]
        steps = {s.oy: s for s in geo.steps}
        fill, total = int(self.op.attrs["fill"]), self.ow * self.n

        def body(m: int, oy: int) -> list[str]:
            step, lines = steps[oy], []
            for k, part in enumerate(step.operands):
                value = self.op.inputs[k]
                _, w, c = geo.sizes[k]
                rb, base = w * c, band + geo.offsets[k]
                if part.kept and part.moved:
                    lines.append(f"copy {base}(r0), {base + part.moved * rb}(r0), {rb}, "
                                 f"{part.kept}, {rb}, {rb}")
                pieces = self.group.recvs[self.code.core][k][self.index[oy]]
                for slot, iy in part.fills:
                    lines += self._receive([p for p in pieces if p.iy == iy], value,
                                           base + slot * rb, c, 0, m)
            if step.table < 0:
                lines.append(f"fill {self.out}(r0), {fill}, {total}")
            else:
                lines.append(f"vgather.{ty} {self.out}(r0), {band}(r0), {total}, "
                             f"{tables[step.table]}(r0), {fill}")
            return lines + self._finish(m, oy)

        return body


def participants(op: Op) -> list[int]:
    """Cores working for `op` (any replica)."""
    if op.kind == "matvec":
        return sorted(set(op.attrs["block_cores"]))
    return [int(op.attrs["core"])]
