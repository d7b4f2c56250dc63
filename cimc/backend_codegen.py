"""Code generation: a scheduled module -> per-core assembly lines and `.data`.

Layers run one after the other; every tensor lives in global memory at the
address `schedule` gave it (attribute `addr`), and every core executes `sync`
after each layer so the next layer reads complete tensors. Within a matvec,
the cores holding blocks of a column block compute partial sums and send them
to the column's reducer core (tags from `schedule`), which adds them, adds the
bias, requantizes and stores the output pixel.

Each core's local memory holds its constant tables (bias, requantization)
from the top down, and the buffers of the current layer from address 0 up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cimc.backend_window import Window, sweep
from cimc.diagnostics import CimcError
from cimc.ir import Module, Op
from passes.lower import image_dims
from passes.tile import blocks_of
from targets import Target

# Elements per chunk of the element-wise loops (their requant tables hold one
# entry per element of a chunk).
CHUNK = 128
ALIGN = 16


@dataclass
class CoreCode:
    """What one core runs: assembly lines, `.data` tables, local memory use."""

    core: int
    top: int  # lowest address used by tables (they grow down from the top)
    lines: list[str] = field(default_factory=list)
    data: list[tuple[int, list[int]]] = field(default_factory=list)
    peak: int = 0  # highest address used by layer buffers

    def table(self, words: np.ndarray) -> int:
        """Place i32 words among the constant tables; return their address."""
        flat = [int(v) for v in np.asarray(words, dtype=np.int64).reshape(-1)]
        self.top = (self.top - 4 * len(flat)) // ALIGN * ALIGN
        self.data.append((self.top, flat))
        return self.top


CoreLookup = Callable[[int], CoreCode]


class Buffers:
    """Bump allocation of one layer's buffers from local address 0."""

    def __init__(self, code: CoreCode) -> None:
        self.code = code
        self.next = 0

    def take(self, size: int) -> int:
        addr = self.next
        self.next = -(-(addr + size) // ALIGN) * ALIGN
        self.code.peak = max(self.code.peak, self.next)
        return addr


def generate(module: Module, target: Target) -> dict[int, CoreCode]:
    """Per-core code of a scheduled module; CimcError if local memory overflows."""
    cores: dict[int, CoreCode] = {}

    def core(number: int) -> CoreCode:
        if number not in cores:
            cores[number] = CoreCode(number, target.local_memory_bytes)
        return cores[number]

    layers = [op for op in module.ops() if op.kind in GENERATORS]
    for op in layers:
        for number in participants(op):
            core(number)
    for index, op in enumerate(layers):
        GENERATORS[op.kind](module, op, target, core, f"L{index}")
        for code in cores.values():
            code.lines += [f"sync  # end of {op.name}"]
    for code in cores.values():
        code.lines.append("halt")
        if code.peak > code.top:
            need = code.peak + target.local_memory_bytes - code.top
            raise CimcError(f"core {code.core} needs {need} bytes of local memory but target "
                            f"{target.name!r} has {target.local_memory_bytes}; "
                            "choose a target with more local memory")
    return dict(sorted(cores.items()))


def participants(op: Op) -> list[int]:
    if op.kind == "matvec":
        return sorted(set(op.attrs["block_cores"]) | set(op.attrs["reducers"]))
    return [int(op.attrs["core"])]


def _dtype(module: Module, value: str) -> str:
    return module.values[value].dtype


def addr(module: Module, value: str) -> int:
    """Global address of a runtime tensor (set by schedule on its producer)."""
    producer = module.producer(value)
    if producer is None:
        raise CimcError(f"value {value!r} has no global address; run the schedule pass")
    return int(producer.attrs["addr"])


@dataclass
class MatvecCore:
    """One core's part of a matvec: its blocks, the columns it reduces, its buffers."""

    number: int
    blocks: list[tuple[int, int, int]]  # (row block, column block, group id) on this core
    senders: dict[int, list[int]]  # reduced column -> other cores holding its blocks
    window: int | None  # gathered window buffer, or None when read in place (r2)
    psum: dict[int, int]  # column block -> i32 partial sum buffer
    consts: dict[int, tuple[int, int]]  # reduced column -> (bias, requant table) addresses
    tmp: int
    out: int


def matvec(module: Module, op: Op, target: Target, core: CoreLookup, label: str) -> None:
    win = Window.of(module, op)
    x, y = op.inputs[0], op.outputs[0]
    xt, yt = _dtype(module, x), _dtype(module, y)
    bias, table = module.constants[op.inputs[2]], module.constants[op.inputs[3]]
    zx = int(module.values[x].quant.zero_point[0])  # type: ignore[union-attr]
    rows, width = op.attrs["block_rows"], op.attrs["block_cols"]
    placed = list(zip(blocks_of(op), op.attrs["block_cores"], op.attrs["block_groups"],
                      strict=True))
    reducers, tags = op.attrs["reducers"], op.attrs["tags"]

    def cols(j: int) -> tuple[int, int]:
        return j * width, min(win.n, (j + 1) * width)

    def body(part: MatvecCore) -> list[str]:
        lines = win.gather(part.window) if part.window is not None else []
        src, reg = (0, "r2") if part.window is None else (part.window, "r0")
        for j in sorted(part.psum):
            ours = [(i, g) for i, jj, g in part.blocks if jj == j]
            for k, (i, g) in enumerate(ours):
                mnemonic = f"mvm.{xt}" if k == 0 else f"mvm.acc.{xt}"
                lines.append(f"{mnemonic} {g}, {part.psum[j]}(r0), {src + i * rows}({reg})")
            if reducers[j] != part.number:
                n = cols(j)[1] - cols(j)[0]
                lines.append(f"send {reducers[j]}, {part.psum[j]}(r0), {4 * n}, {tags[j]}")
        for j, others in part.senders.items():
            lo, hi = cols(j)
            n, acc = hi - lo, part.psum[j]
            for other in others:
                lines += [f"recv {other}, {part.tmp}(r0), {4 * n}, {tags[j]}",
                          f"vadd.i32 {acc}(r0), {acc}(r0), {part.tmp}(r0), {n}"]
            b, t = part.consts[j]
            lines += [f"vadd.i32 {acc}(r0), {acc}(r0), {b}(r0), {n}",
                      f"requant.{yt} {part.out}(r0), {acc}(r0), {n}, {t}(r0)",
                      f"st {lo}(r3), {part.out}(r0), {n}"]
        return lines

    for number in participants(op):
        code = core(number)
        buf = Buffers(code)
        band = buf.take(win.band_bytes)
        window = None if win.contiguous else buf.take(win.window_bytes)
        mine = [(i, j, g) for (i, j), c, g in placed if c == number]
        reduced = [j for j, r in enumerate(reducers) if r == number]
        part = MatvecCore(
            number, mine,
            {j: sorted({c for (_, jj), c, _ in placed if jj == j and c != number})
             for j in reduced},
            window, {j: buf.take(4 * width) for j in sorted({j for _, j, _ in mine})},
            {j: (code.table(bias[slice(*cols(j))]), code.table(table[slice(*cols(j))]))
             for j in reduced},
            buf.take(4 * width), buf.take(width))
        code.lines.append(f"# {op.name}: matvec {win.kh}x{win.kw}, {win.c} -> {win.n} channels")
        code.lines += sweep(win, band, zx, addr(module, x), int(op.attrs["addr"]), label,
                            functools.partial(body, part))


def pool(module: Module, op: Op, target: Target, core: CoreLookup, label: str) -> None:
    win = Window.of(module, op)
    x = op.inputs[0]
    xt, yt = _dtype(module, x), _dtype(module, op.outputs[0])
    a = op.attrs
    code = core(int(a["core"]))
    buf = Buffers(code)
    band = buf.take(win.band_bytes)
    window = None if win.contiguous else buf.take(win.window_bytes)
    acc, out = buf.take(4 * win.c), buf.take(win.c)
    src = "0(r2)" if window is None else f"{window}(r0)"
    count = win.kh * win.kw
    info = np.iinfo(np.dtype(np.int8 if xt == "i8" else np.uint8))
    if a["mode"] == "max":
        pad = int(info.min)
        step = [f"vredmax.{xt} {out}(r0), {src}, {win.c}, {count}, {win.c}"]
        if a["lo"] > info.min:
            step.append(f"vmaxi.{xt} {out}(r0), {out}(r0), {a['lo']}, {win.c}")
        if a["hi"] < info.max:
            step.append(f"vmini.{xt} {out}(r0), {out}(r0), {a['hi']}, {win.c}")
    else:
        pad = int(module.values[x].quant.zero_point[0])  # type: ignore[union-attr]
        entry = [a["M"], a["shift"], a["zy"], a["lo"], a["hi"]]
        table = code.table(np.tile(np.asarray(entry, dtype=np.int64), win.c))
        step = [f"vredsum.{xt} {acc}(r0), {src}, {win.c}, {count}, {win.c}",
                f"vaddi.i32 {acc}(r0), {acc}(r0), {a['offset']}, {win.c}",
                f"requant.{yt} {out}(r0), {acc}(r0), {win.c}, {table}(r0)"]
    step.append(f"st 0(r3), {out}(r0), {win.c}")

    def body() -> list[str]:
        return (win.gather(window) if window is not None else []) + step

    code.lines.append(f"# {op.name}: {a['mode']} pool {win.kh}x{win.kw}")
    code.lines += sweep(win, band, pad, addr(module, x), int(a["addr"]), label, body)


def _chunked(total: int, chunk: int, pointers: list[tuple[int, int]], label: str,
             body: Callable[[int], list[str]]) -> list[str]:
    """Run body(n) over `total` elements in chunks; pointers in r1, r2, ... advance by
    chunk times their element size (given as (address, bytes per element))."""
    lines = []
    full, rest = divmod(total, chunk)
    for k, (base, _) in enumerate(pointers):
        lines.append(f"li r{k + 1}, {base}")
    if full:
        lines += ["li r6, 0", f"li r7, {full}", f"{label}:"]
        lines += body(chunk)
        lines += [f"addi r{k + 1}, r{k + 1}, {chunk * size}"
                  for k, (_, size) in enumerate(pointers)]
        lines += ["addi r6, r6, 1", f"blt r6, r7, {label}"]
    if rest:
        lines += body(rest)
    return lines


def _requant_table(code: CoreCode, entry: list[int], n: int) -> int:
    return code.table(np.tile(np.asarray(entry, dtype=np.int64), n))


def eltwise(module: Module, op: Op, target: Target, core: CoreLookup, label: str) -> None:
    a = op.attrs
    (x1, x2), y = op.inputs, op.outputs[0]
    t1, t2, ty = _dtype(module, x1), _dtype(module, x2), _dtype(module, y)
    code = core(int(a["core"]))
    total = module.values[y].size
    chunk = min(total, CHUNK)
    buf = Buffers(code)
    b1, b2, w1, w2, out = (buf.take(s) for s in (chunk, chunk, 4 * chunk, 4 * chunk, chunk))
    table = _requant_table(code, [1, a["shift"], a["zy"], a["lo"], a["hi"]], chunk)

    def body(n: int) -> list[str]:
        return [f"ld {b1}(r0), 0(r1), {n}", f"ld {b2}(r0), 0(r2), {n}",
                f"vscale.{t1} {w1}(r0), {b1}(r0), {n}, {a['za']}, {a['ma']}",
                f"vscale.{t2} {w2}(r0), {b2}(r0), {n}, {a['zb']}, {a['mb']}",
                f"vadd.i32 {w1}(r0), {w1}(r0), {w2}(r0), {n}",
                f"requant.{ty} {out}(r0), {w1}(r0), {n}, {table}(r0)",
                f"st 0(r3), {out}(r0), {n}"]

    code.lines.append(f"# {op.name}: eltwise {total} elements")
    pointers = [(addr(module, x1), 1), (addr(module, x2), 1), (int(a["addr"]), 1)]
    code.lines += _chunked(total, chunk, pointers, label, body)


def rescale(module: Module, op: Op, target: Target, core: CoreLookup, label: str) -> None:
    a = op.attrs
    x, y = op.inputs[0], op.outputs[0]
    tx, ty = _dtype(module, x), _dtype(module, y)
    code = core(int(a["core"]))
    total = module.values[y].size
    chunk = min(total, CHUNK)
    buf = Buffers(code)
    inb, wide, out = buf.take(chunk), buf.take(4 * chunk), buf.take(chunk)
    if a["M"]:
        table = _requant_table(code, [a["M"], a["shift"], a["zy"], a["lo"], a["hi"]], chunk)

    def body(n: int) -> list[str]:
        lines = [f"ld {inb}(r0), 0(r1), {n}"]
        if a["M"]:
            lines += [f"vscale.{tx} {wide}(r0), {inb}(r0), {n}, {a['zx']}, 1",
                      f"requant.{ty} {out}(r0), {wide}(r0), {n}, {table}(r0)"]
            return lines + [f"st 0(r2), {out}(r0), {n}"]
        lines += [f"vmaxi.{tx} {inb}(r0), {inb}(r0), {a['lo']}, {n}",
                  f"vmini.{tx} {inb}(r0), {inb}(r0), {a['hi']}, {n}"]
        return lines + [f"st 0(r2), {inb}(r0), {n}"]

    code.lines.append(f"# {op.name}: rescale {total} elements")
    pointers = [(addr(module, x), 1), (int(a["addr"]), 1)]
    code.lines += _chunked(total, chunk, pointers, label, body)


def concat(module: Module, op: Op, target: Target, core: CoreLookup, label: str) -> None:
    code = core(int(op.attrs["core"]))
    h, w, c = image_dims(module.values[op.outputs[0]])
    channels = [image_dims(module.values[v])[2] for v in op.inputs]
    pixels = max(1, min(h * w, 2048 // c))
    buf = Buffers(code)
    part, out = buf.take(pixels * max(channels)), buf.take(pixels * c)
    offsets = np.cumsum([0, *channels]).tolist()

    def body(n: int) -> list[str]:
        lines = []
        for k, ck in enumerate(channels):
            lines += [f"ld {part}(r0), 0(r{k + 2}), {n * ck}",
                      f"copy {out + offsets[k]}(r0), {part}(r0), {ck}, {n}, {c}, {ck}"]
        return lines + [f"st 0(r1), {out}(r0), {n * c}"]

    if len(op.inputs) > 4:
        raise CimcError(f"op {op.name!r} (concat): at most 4 operands are supported")
    code.lines.append(f"# {op.name}: concat of {len(channels)} tensors")
    pointers = [(int(op.attrs["addr"]), c)] + [(addr(module, v), ck)
                                               for v, ck in zip(op.inputs, channels, strict=True)]
    code.lines += _chunked(h * w, pixels, pointers, label, body)


GENERATORS = {"matvec": matvec, "pool": pool, "eltwise": eltwise, "rescale": rescale,
              "concat": concat}
