"""The binary program format: Program <-> bytes (layout in docs/isa.md).

All integers are little-endian. A file is

    magic "CIMCPROG", u16 version, u16 word bits (128)
    str target, str image                 (str = u8 present, u32 length, UTF-8)
    u32 #inputs, IODecl...; u32 #outputs, IODecl...
        IODecl = str name, u64 addr, str dtype, u32 rank, u64 dims..., f64 scale, i64 zp
    u32 #cores, per core ascending:
        u32 core, u32 #segments, (u64 addr, u32 length, bytes)...,
        u32 #instructions, 16-byte instruction words...
    version 2 only (a program with `.global_data`; one without is version 1):
        u32 #global segments, (u64 addr, u32 length, bytes)...

An instruction word holds the opcode in bits [7:0] and each operand field at
the bit range cimc.isa.table gives it (two's complement for signed fields); bits
not covered by a field are zero.
"""

from __future__ import annotations

import struct

from cimc.diagnostics import CimcError
from cimc.isa.program import CoreStream, DataSegment, Instruction, IODecl, Program
from cimc.isa.table import BY_MNEMONIC, BY_OPCODE, OPCODE_BITS, WORD_BITS, WORD_BYTES

MAGIC = b"CIMCPROG"
VERSION = 2  # the newest this cimc reads and writes; 1 has no global data section


def encode_word(ins: Instruction) -> int:
    """The instruction word of one instruction; CimcError if a value does not fit."""
    spec = BY_MNEMONIC.get(ins.mnemonic)
    where = f"{ins.loc}: " if ins.loc else ""
    if spec is None:
        raise CimcError(f"{where}unknown instruction '{ins.mnemonic}'")
    if len(ins.operands) != len(spec.fields):
        raise CimcError(f"{where}{ins.mnemonic} has {len(spec.fields)} operand fields, "
                        f"got {len(ins.operands)}")
    word = spec.opcode
    for fld, value in zip(spec.fields, ins.operands, strict=True):
        if not fld.min <= value <= fld.max:
            raise CimcError(f"{where}{ins.mnemonic}: {fld.name} = {value} out of range "
                            f"{fld.min}..{fld.max}")
        word |= (value & ((1 << fld.width) - 1)) << fld.lo
    return word


def decode_word(word: int) -> Instruction:
    """The instruction in an instruction word; ValueError if it is not one."""
    spec = BY_OPCODE.get(word & ((1 << OPCODE_BITS) - 1))
    if spec is None:
        raise ValueError(f"unknown opcode {word & 0xFF:#04x}")
    used = spec.mask
    values = []
    for fld in spec.fields:
        raw = (word >> fld.lo) & ((1 << fld.width) - 1)
        if fld.signed and raw >> (fld.width - 1):
            raw -= 1 << fld.width
        if not fld.min <= raw <= fld.max:
            raise ValueError(f"{spec.mnemonic}: {fld.name} = {raw} out of range")
        values.append(raw)
        used |= fld.mask
    if word & ~used & ((1 << WORD_BITS) - 1):
        raise ValueError(f"{spec.mnemonic}: reserved bits are set")
    return Instruction(spec.mnemonic, tuple(values))


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def pack(self, fmt: str, *values: int | float) -> None:
        self.out += struct.pack("<" + fmt, *values)

    def text(self, value: str | None) -> None:
        data = (value or "").encode()
        self.pack("BI", value is not None, len(data))
        self.out += data

    def io(self, decl: IODecl) -> None:
        self.text(decl.name)
        self.pack("Q", decl.addr)
        self.text(decl.dtype)
        self.pack("I", len(decl.shape))
        for dim in decl.shape:
            self.pack("Q", dim)
        self.pack("dq", decl.scale, decl.zp)


def encode_program(program: Program) -> bytes:
    """The binary form of a program."""
    w = _Writer()
    w.out += MAGIC
    w.pack("HH", 2 if program.global_data else 1, WORD_BITS)
    w.text(program.target)
    w.text(program.image)
    for decls in (program.inputs, program.outputs):
        w.pack("I", len(decls))
        for decl in decls:
            w.io(decl)
    cores = program.cores()
    w.pack("I", len(cores))
    for core in cores:
        segments = program.data.get(core, [])
        w.pack("II", core, len(segments))
        for segment in segments:
            w.pack("QI", segment.addr, len(segment.data))
            w.out += segment.data
        stream = program.streams.get(core, CoreStream(core))
        w.pack("I", len(stream.instructions))
        for ins in stream.instructions:
            w.out += encode_word(ins).to_bytes(WORD_BYTES, "little")
    if program.global_data:
        w.pack("I", len(program.global_data))
        for segment in program.global_data:
            w.pack("QI", segment.addr, len(segment.data))
            w.out += segment.data
    return bytes(w.out)


class _Reader:
    def __init__(self, blob: bytes, filename: str) -> None:
        self.blob, self.pos, self.filename = blob, 0, filename

    def error(self, message: str) -> CimcError:
        return CimcError(f"{self.filename}: corrupt program binary at byte {self.pos}: {message}")

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.blob):
            raise self.error(f"truncated (wanted {size} more bytes, file has {len(self.blob)})")
        data = self.blob[self.pos:self.pos + size]
        self.pos += size
        return data

    def unpack(self, fmt: str) -> tuple:
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def text(self) -> str | None:
        present, size = self.unpack("BI")
        try:
            value = self.take(size).decode()
        except UnicodeDecodeError:
            raise self.error("string is not UTF-8") from None
        return value if present else None

    def io(self) -> IODecl:
        name, (addr,), dtype = self.text() or "", self.unpack("Q"), self.text() or ""
        (rank,) = self.unpack("I")
        shape = tuple(self.unpack("Q")[0] for _ in range(rank))
        scale, zp = self.unpack("dq")
        return IODecl(name, addr, dtype, shape, scale, zp)


def is_program_binary(blob: bytes) -> bool:
    """Whether `blob` starts like a program binary."""
    return blob.startswith(MAGIC)


def decode_program(blob: bytes, filename: str = "<binary>") -> Program:
    """The program in a binary; CimcError naming `filename` if it is not one."""
    if not is_program_binary(blob):
        raise CimcError(f"{filename}: not a cimc program binary (it does not start with "
                        f"{MAGIC.decode()}); assemble text with `cimc asm`")
    r = _Reader(blob, filename)
    r.take(len(MAGIC))
    version, word_bits = r.unpack("HH")
    if version not in (1, VERSION) or word_bits != WORD_BITS:
        raise CimcError(f"{filename}: program binary version {version} ({word_bits}-bit words) "
                        f"is not supported; this cimc reads versions 1 and {VERSION} "
                        f"({WORD_BITS}-bit)")
    program = Program(target=r.text(), image=r.text())
    program.inputs = [r.io() for _ in range(r.unpack("I")[0])]
    program.outputs = [r.io() for _ in range(r.unpack("I")[0])]
    for _ in range(r.unpack("I")[0]):
        core, count = r.unpack("II")
        segments = []
        for _ in range(count):
            addr, size = r.unpack("QI")
            segments.append(DataSegment(addr, r.take(size)))
        if segments:
            program.data[core] = segments
        stream = program.streams[core] = CoreStream(core)
        for index in range(r.unpack("I")[0]):
            word = int.from_bytes(r.take(WORD_BYTES), "little")
            try:
                stream.instructions.append(decode_word(word))
            except ValueError as exc:
                raise r.error(f"core {core} instruction {index}: {exc}") from None
    if version == 2:
        for _ in range(r.unpack("I")[0]):
            addr, size = r.unpack("QI")
            program.global_data.append(DataSegment(addr, r.take(size)))
    if r.pos != len(blob):
        raise r.error(f"{len(blob) - r.pos} bytes of trailing garbage")
    return program
