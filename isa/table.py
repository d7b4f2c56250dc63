"""The instruction set as data: one line per instruction, from which the
assembler, disassembler, encoder, simulator and docs/isa.md are derived.

Every instruction is one 128-bit little-endian word. Bits [7:0] hold the
opcode, unique per mnemonic (type suffix included); the operand fields follow
from bit 8 upward in operand order, each as wide as its kind says; unused
high bits are zero. `check_table()` proves the encodings are disjoint, fields
do not overlap and fit in the word, and every operand range fits its field.

Operand kinds (the column after `name:`):
  reg    register r0..r15                     one 4-bit field
  mem    local memory operand offset(rN)      base register (4) + offset s24
  gmem   global memory operand offset(rN)     base register (4) + offset s32
  label  branch target (instruction index)    u24
  group  crossbar group id of this core       u16
  core   core id (global numbering)           u16
  byte   byte value, -128..255                9-bit signed field
  sN/uN  signed/unsigned immediate of N bits
A `.T` mnemonic expands to one instruction per type suffix listed in the
types column (opcode + 0, +1, +2 for i8, u8, i32); `{T}` in the semantics
names that type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

WORD_BITS = 128
WORD_BYTES = WORD_BITS // 8
OPCODE_BITS = 8
TYPE_SUFFIXES: tuple[str, ...] = ("i8", "u8", "i32")
ELEMENT_BYTES: dict[str, int] = {"i8": 1, "u8": 1, "i32": 4}

# Latency/energy classes the simulator charges instructions to (the target's
# latency and energy tables are keyed by these).
COST_CLASSES: tuple[str, ...] = (
    "scalar", "sync", "mvm", "vector", "requant", "copy", "global", "send", "recv", "program",
)

# Each instruction: a head line (mnemonic, opcode, types, cost class, operands;
# types "-" = no suffix, else the suffixes `.T` expands to), then its semantics
# on indented lines.
TABLE_TEXT = """
halt        0x01  -          scalar   -
    stop this core's stream
sync        0x02  -          sync     -
    barrier: wait until every core that has a stream reaches a sync
li          0x03  -          scalar   rd:reg imm:s64
    rd = imm
addi        0x04  -          scalar   rd:reg rs:reg imm:s32
    rd = rs + imm
add         0x05  -          scalar   rd:reg rs:reg rt:reg
    rd = rs + rt
sub         0x06  -          scalar   rd:reg rs:reg rt:reg
    rd = rs - rt
mul         0x07  -          scalar   rd:reg rs:reg rt:reg
    rd = rs * rt (low 64 bits)
jmp         0x08  -          scalar   target:label
    pc = target
bne         0x09  -          scalar   rs:reg rt:reg target:label
    if rs != rt: pc = target
blt         0x0a  -          scalar   rs:reg rt:reg target:label
    if rs < rt (signed): pc = target
mvm.T       0x10  i8,u8      mvm      g:group dst:mem src:mem
    dst_i32[j] = sum over i of src_{T}[i] * W_g[i, j],
    for i < rows_used(g), j < cols_used(g)
mvm.acc.T   0x12  i8,u8      mvm      g:group dst:mem src:mem
    dst_i32[j] += sum over i of src_{T}[i] * W_g[i, j],
    for i < rows_used(g), j < cols_used(g)
wprog       0x14  -          program  g:group
    program crossbar group g of this core with its cells from the off-chip weight store
    (the image); every other group of the core sharing a cell with g loses its cells
vadd.T      0x20  i8,u8,i32  vector   dst:mem a:mem b:mem n:u24
    dst_{T}[i] = a[i] + b[i] for i < n
vsub.T      0x24  i8,u8,i32  vector   dst:mem a:mem b:mem n:u24
    dst_{T}[i] = a[i] - b[i] for i < n
vmul.T      0x28  i8,u8,i32  vector   dst:mem a:mem b:mem n:u24
    dst_{T}[i] = a[i] * b[i] for i < n
vmax.T      0x2c  i8,u8,i32  vector   dst:mem a:mem b:mem n:u24
    dst_{T}[i] = max(a[i], b[i]) for i < n
vmin.T      0x30  i8,u8,i32  vector   dst:mem a:mem b:mem n:u24
    dst_{T}[i] = min(a[i], b[i]) for i < n
vaddi.T     0x34  i8,u8,i32  vector   dst:mem src:mem imm:s32 n:u24
    dst_{T}[i] = src[i] + imm for i < n
vmaxi.T     0x38  i8,u8,i32  vector   dst:mem src:mem imm:s32 n:u24
    dst_{T}[i] = max(src[i], imm) for i < n
vmini.T     0x3c  i8,u8,i32  vector   dst:mem src:mem imm:s32 n:u24
    dst_{T}[i] = min(src[i], imm) for i < n
vshl.T      0x40  i8,u8,i32  vector   dst:mem src:mem imm:u5 n:u24
    dst_{T}[i] = src[i] << imm for i < n
vshr.T      0x44  i8,u8,i32  vector   dst:mem src:mem imm:u5 n:u24
    dst_{T}[i] = src[i] >> imm for i < n (arithmetic; logical for u8)
vscale.T    0x48  i8,u8      vector   dst:mem src:mem n:u24 zp:s16 m:s24
    dst_i32[i] = (src_{T}[i] - zp) * m for i < n
requant.T   0x4c  i8,u8      requant  dst:mem src:mem n:u24 table:mem
    dst_{T}[i] = min(max(sat_{T}(round_half_even(src_i32[i] * M / 2^shift) + zp), lo), hi)
    for i < n, with (M, shift, zp, lo, hi) = table[i], 5 x i32 per entry
vlut.T      0x50  i8,u8      vector   dst:mem src:mem n:u24 table:mem
    dst_{T}[i] = table[src[i] as unsigned byte] for i < n (table: 256 bytes)
vredmax.T   0x54  i8,u8,i32  vector   dst:mem src:mem n:u24 count:u16 stride:u24
    dst_{T}[i] = max over k < count of src_{T}[i + k * stride] for i < n
vredsum.T   0x58  i8,u8,i32  vector   dst:mem src:mem n:u24 count:u16 stride:u24
    dst_i32[i] = sum over k < count of src_{T}[i + k * stride] for i < n
vgather.T   0x64  i8,u8      vector   dst:mem src:mem n:u24 index:mem fill:byte
    dst_{T}[i] = fill if index_i32[i] < 0 else src_{T}[index_i32[i]] for i < n
    (a gather through a table of i32 offsets; data movement of layout ops)
vdiv.T      0x5c  i32        vector   dst:mem a:mem b:mem n:u24
    dst_i32[i] = round_half_even(a[i] / b[i]) for i < n (every b[i] > 0, else a fault)
visqrt.T    0x68  i32        vector   dst:mem src:mem imm:u6 n:u24
    dst_i32[i] = floor(2^imm / sqrt(src[i])) for i < n (every src[i] > 0, else a fault)
copy        0x60  -          copy     dst:mem src:mem len:u16 reps:u16 dst_stride:u16 src_stride:u16
    bytes dst[r * dst_stride + b] = src[r * src_stride + b] for r < reps, b < len
fill        0x61  -          copy     dst:mem value:byte len:u24
    bytes dst[b] = value for b < len
ld          0x62  -          global   dst:mem src:gmem len:u24
    local bytes dst[b] = global bytes src[b] for b < len
st          0x63  -          global   dst:gmem src:mem len:u24
    global bytes dst[b] = local bytes src[b] for b < len
send        0x70  -          send     core:core src:mem len:u24 tag:u16
    send the len bytes at src to `core` with `tag` (non-blocking, buffered)
recv        0x71  -          recv     core:core dst:mem len:u24 tag:u16
    wait for the message from `core` with `tag` (same len) and write its bytes to dst
"""


@dataclass(frozen=True)
class Field:
    """A bit range [lo, lo + width) of the instruction word and the values it may hold."""

    name: str
    lo: int
    width: int
    signed: bool
    min: int
    max: int

    @property
    def hi(self) -> int:
        return self.lo + self.width - 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo


@dataclass(frozen=True)
class Operand:
    """One operand as written in assembly; a memory operand has two fields."""

    name: str
    kind: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class InstructionSpec:
    """One instruction of the ISA: mnemonic, opcode, operands, meaning, cost class."""

    mnemonic: str
    opcode: int
    cost: str
    operands: tuple[Operand, ...]
    semantics: str

    @cached_property
    def fields(self) -> tuple[Field, ...]:
        """Operand fields in operand order (the order of Instruction.operands)."""
        return tuple(f for op in self.operands for f in op.fields)

    @property
    def opcode_field(self) -> Field:
        return Field("opcode", 0, OPCODE_BITS, False, self.opcode, self.opcode)

    @property
    def mask(self) -> int:
        """Bits fixed by the encoding (riscv-opcodes' mask)."""
        return self.opcode_field.mask

    @property
    def match(self) -> int:
        """Values of the fixed bits (riscv-opcodes' match)."""
        return self.opcode

    @property
    def suffix(self) -> str | None:
        """Element type suffix (i8, u8, i32) or None."""
        last = self.mnemonic.rsplit(".", 1)[-1]
        return last if last in TYPE_SUFFIXES and "." in self.mnemonic else None

    @property
    def syntax(self) -> str:
        """Assembly form, e.g. `vadd.i8 dst, a, b, n`."""
        names = ", ".join(op.name for op in self.operands)
        return f"{self.mnemonic} {names}".rstrip()


# kind -> (width, signed, min, max); mem/gmem are built from reg + offset.
_REG = (4, False, 0, 15)
_KINDS: dict[str, tuple[int, bool, int, int]] = {
    "reg": _REG,
    "label": (24, False, 0, (1 << 24) - 1),
    "group": (16, False, 0, (1 << 16) - 1),
    "core": (16, False, 0, (1 << 16) - 1),
    "byte": (9, True, -128, 255),
}
_OFFSET_BITS = {"mem": 24, "gmem": 32}
_INT_KIND = re.compile(r"([su])(\d+)$")


def _range(kind: str) -> tuple[int, bool, int, int]:
    if kind in _KINDS:
        return _KINDS[kind]
    match = _INT_KIND.match(kind)
    if not match:
        raise ValueError(f"unknown operand kind {kind!r}")
    width = int(match.group(2))
    if match.group(1) == "s":
        return width, True, -(1 << (width - 1)), (1 << (width - 1)) - 1
    return width, False, 0, (1 << width) - 1


def _operands(text: str) -> tuple[Operand, ...]:
    """Operands of one table line, fields laid out from bit OPCODE_BITS up."""
    operands = []
    lo = OPCODE_BITS
    for item in [] if text == "-" else text.split():
        name, kind = item.split(":")
        parts: list[tuple[str, tuple[int, bool, int, int]]]
        if kind in _OFFSET_BITS:
            parts = [(f"{name}.base", _REG), (f"{name}.offset", _range(f"s{_OFFSET_BITS[kind]}"))]
        else:
            parts = [(name, _range(kind))]
        fields = []
        for field_name, (width, signed, vmin, vmax) in parts:
            fields.append(Field(field_name, lo, width, signed, vmin, vmax))
            lo += width
        operands.append(Operand(name, kind, tuple(fields)))
    return tuple(operands)


def parse_table(text: str) -> tuple[InstructionSpec, ...]:
    """Instruction specs from table text (expanding `.T` over the listed types)."""
    entries: list[tuple[str, list[str]]] = []  # (head line, semantics lines)
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            entries[-1][1].append(line.strip())
        else:
            entries.append((line, []))
    specs = []
    for head, semantics in entries:
        mnemonic, opcode, types, cost, operand_text = head.split(None, 4)
        operands = _operands(operand_text.strip())
        suffixes = [None] if types == "-" else types.split(",")
        for suffix in suffixes:
            offset = 0 if suffix is None else TYPE_SUFFIXES.index(suffix)
            name = mnemonic if suffix is None else mnemonic.replace(".T", f".{suffix}")
            meaning = " ".join(semantics).replace("{T}", suffix or "")
            specs.append(InstructionSpec(name, int(opcode, 0) + offset, cost, operands, meaning))
    return tuple(specs)


SPECS: tuple[InstructionSpec, ...] = parse_table(TABLE_TEXT)
BY_MNEMONIC: dict[str, InstructionSpec] = {spec.mnemonic: spec for spec in SPECS}
BY_OPCODE: dict[int, InstructionSpec] = {spec.opcode: spec for spec in SPECS}


def check_table(specs: tuple[InstructionSpec, ...] = SPECS) -> list[str]:
    """Problems with an instruction table; empty when it is sound.

    Checks: mnemonics unique; encodings disjoint (no word matches two
    instructions' fixed bits); within each word the opcode and operand fields
    do not overlap and fit in WORD_BITS; each field can hold its operand range;
    cost classes known.
    """
    problems = []
    seen: dict[str, InstructionSpec] = {}
    for spec in specs:
        if spec.mnemonic in seen:
            problems.append(f"{spec.mnemonic}: mnemonic defined twice")
        seen[spec.mnemonic] = spec
        if spec.cost not in COST_CLASSES:
            problems.append(f"{spec.mnemonic}: unknown cost class {spec.cost!r}")
        names = [op.name for op in spec.operands]
        if len(set(names)) != len(names):
            problems.append(f"{spec.mnemonic}: operand names repeat: {names}")
        used = 0
        for field in (spec.opcode_field, *spec.fields):
            if field.lo < 0 or field.width <= 0 or field.hi >= WORD_BITS:
                problems.append(f"{spec.mnemonic}: field {field.name} [{field.hi}:{field.lo}] "
                                f"is outside the {WORD_BITS}-bit word")
            if used & field.mask:
                problems.append(f"{spec.mnemonic}: field {field.name} overlaps another field")
            used |= field.mask
            low, high = ((-(1 << (field.width - 1)), (1 << (field.width - 1)) - 1)
                         if field.signed else (0, (1 << field.width) - 1))
            if not low <= field.min <= field.max <= high:
                problems.append(f"{spec.mnemonic}: field {field.name} range "
                                f"[{field.min}, {field.max}] does not fit {field.width} bits")
    for i, a in enumerate(specs):
        for b in specs[i + 1:]:
            if (a.match ^ b.match) & a.mask & b.mask == 0:
                problems.append(f"{a.mnemonic} and {b.mnemonic}: encodings overlap")
    return problems
