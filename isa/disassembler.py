"""The disassembler: a Program as assembly text that assembles back to it.

Branch targets get synthesized labels L0, L1, ... per core (in address
order); data segments are written as `.word` lines when their length is a
multiple of 4, `.byte` lines otherwise.
"""

from __future__ import annotations

from cimc.diagnostics import CimcError
from cimc.isa.asm_quote import name_token, quoted
from cimc.isa.program import IODecl, Program
from cimc.isa.table import BY_MNEMONIC

_PER_LINE = 8




def _io(directive: str, decl: IODecl) -> str:
    shape = ", ".join(str(d) for d in decl.shape)
    return (f"{directive} {name_token(decl.name)}, {decl.addr:#x}, {decl.dtype}, [{shape}], "
            f"{decl.scale!r}, {decl.zp}")


def _data_lines(data: bytes) -> list[str]:
    if len(data) % 4 == 0:
        values = [int.from_bytes(data[i:i + 4], "little", signed=True)
                  for i in range(0, len(data), 4)]
        directive = ".word"
    else:
        values = [b - 256 if b >= 128 else b for b in data]
        directive = ".byte"
    return [f"{directive} " + ", ".join(str(v) for v in values[i:i + _PER_LINE])
            for i in range(0, len(values), _PER_LINE)]


def disassemble(program: Program) -> str:
    """Assembly text for `program`."""
    lines = []
    if program.target is not None:
        lines.append(f".target {name_token(program.target)}")
    if program.image is not None:
        lines.append(f".image {quoted(program.image)}")
    lines += [_io(".input", d) for d in program.inputs]
    lines += [_io(".output", d) for d in program.outputs]
    for segment in program.global_data:
        lines.append(f".global_data {segment.addr:#x}")
        lines += _data_lines(segment.data)
    for core in program.cores():
        lines += ["", f".core {core}"]
        for segment in program.data.get(core, []):
            lines.append(f".data {segment.addr:#x}")
            lines += _data_lines(segment.data)
        stream = program.streams.get(core)
        instructions = stream.instructions if stream else []
        targets = sorted({
            value
            for ins in instructions
            for op, value in zip(_operand_kinds(ins.mnemonic), ins.operands, strict=True)
            if op == "label"
        })
        if targets and targets[-1] > len(instructions):
            raise CimcError(f"core {core}: a branch targets instruction {targets[-1]}, past the "
                            f"end of the stream ({len(instructions)} instructions)")
        labels = {index: f"L{n}" for n, index in enumerate(targets)}
        for index, ins in enumerate(instructions):
            if index in labels:
                lines.append(f"{labels[index]}:")
            lines.append(f"    {_instruction(ins.mnemonic, ins.operands, labels)}")
        if len(instructions) in labels:
            lines.append(f"{labels[len(instructions)]}:")
    return "\n".join(lines).lstrip("\n") + "\n"


def _operand_kinds(mnemonic: str) -> list[str]:
    """The operand kind owning each field of an instruction."""
    return [op.kind for op in BY_MNEMONIC[mnemonic].operands for _ in op.fields]


def _instruction(mnemonic: str, values: tuple[int, ...], labels: dict[int, str]) -> str:
    spec = BY_MNEMONIC[mnemonic]
    texts, pos = [], 0
    for op in spec.operands:
        if op.kind in ("mem", "gmem"):
            texts.append(f"{values[pos + 1]}(r{values[pos]})")
        elif op.kind == "reg":
            texts.append(f"r{values[pos]}")
        elif op.kind == "label":
            texts.append(labels[values[pos]])
        else:
            texts.append(str(values[pos]))
        pos += len(op.fields)
    return f"{mnemonic} {', '.join(texts)}".rstrip()
