"""The assembler, binary format and `cimc asm` / `cimc disasm`: what each
directive and operand kind assembles to, each error with its location, and
the command line round trip."""

import re
from pathlib import Path

import pytest

from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.isa.assembler import assemble_text, load_program
from cimc.isa.disassembler import disassemble
from cimc.isa.encoding import decode_program, encode_program
from cimc.isa.program import CoreStream, DataSegment, Instruction, IODecl, Program
from cimc.isa.table import SPECS

DOC = Path(__file__).resolve().parent.parent / "docs" / "isa.md"

LOOP = """\
.target tiny          # the test target
.image "weights/prog.img"
.input  x, 0x0, u8, [4, 4, 2], 0.0039, 0
.output "out:1", 0x40, i8, [10], 1e-2, -3   ; quoted name

.core 2
.data 0x100
.word 1, -1
.byte 0x7f, -128, 255
    li r1, 0
    li r2, 0x20
loop: ld 0(r3), 16(r1), 32
    mvm.acc.u8 7, -8(r4), (r5)
    addi r1, r1, 1
    blt r1, r2, loop
done:
.core 0
    jmp end
end:
"""


def test_directives_labels_and_operands_assemble_to_the_program():
    program = assemble_text(LOOP, "loop.s")
    assert program == Program(
        target="tiny",
        image="weights/prog.img",
        inputs=[IODecl("x", 0, "u8", (4, 4, 2), 0.0039, 0)],
        outputs=[IODecl("out:1", 0x40, "i8", (10,), 0.01, -3)],
        streams={
            0: CoreStream(0, [Instruction("jmp", (1,))]),
            2: CoreStream(2, [
                Instruction("li", (1, 0)),
                Instruction("li", (2, 32)),
                Instruction("ld", (3, 0, 1, 16, 32)),
                Instruction("mvm.acc.u8", (7, 4, -8, 5, 0)),
                Instruction("addi", (1, 1, 1)),
                Instruction("blt", (1, 2, 2)),
            ]),
        },
        data={2: [DataSegment(0x100, bytes([1, 0, 0, 0, 255, 255, 255, 255, 0x7F, 0x80, 0xFF]))]},
    )
    assert list(program.streams) == [0, 2]
    loc = program.streams[2].instructions[3].loc
    assert (loc.file, loc.line, loc.column) == ("loop.s", 13, 5)


def _sample_line(spec):
    """A line using every operand of `spec` and the values it must assemble to."""
    texts, values = [], []
    for i, op in enumerate(spec.operands):
        if op.kind in ("mem", "gmem"):
            texts.append(f"{-3 - i}(r{i + 1})")
            values += [i + 1, -3 - i]
        elif op.kind == "reg":
            texts.append(f"r{15 - i}")
            values.append(15 - i)
        elif op.kind == "label":
            texts.append("here")
            values.append(0)
        else:
            field = op.fields[0]
            texts.append(hex(field.max) if i % 2 else str(field.max))
            values.append(field.max)
    return f"{spec.mnemonic} {', '.join(texts)}", tuple(values)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.mnemonic)
def test_each_instruction_assembles_with_its_operand_kinds(spec):
    line, values = _sample_line(spec)
    program = assemble_text(f".core 0\nhere: {line}\n")
    assert program.streams[0].instructions == [Instruction(spec.mnemonic, values)]


def test_the_example_in_docs_isa_md_assembles():
    block = DOC.read_text().split("GNU-as style, one statement per line:\n\n", 1)[1]
    text = "\n".join(line[4:] for line in block.split("\n\n- A label")[0].splitlines())
    program = assemble_text(text, "docs/isa.md")
    assert [ins.mnemonic for ins in program.streams[0].instructions] == [
        "li", "li", "ld", "mvm.u8", "requant.i8", "addi", "blt", "halt"]
    assert program.data[0][0].data[:4] == (1518500250).to_bytes(4, "little")


ERRORS = [
    (".core 0\n  vad.i8 0(r1), 0(r2), 0(r3), 4\n", 2, 3,
     "unknown instruction 'vad.i8'; did you mean 'vadd.i8'?"),
    (".core 0\nvadd.i8 0(r1), 0(r2), 4\n", 2, 1,
     "vadd.i8 takes 4 operand(s) (vadd.i8 dst, a, b, n), got 3"),
    (".core 0\nvadd.i8 0(r1), 5, 0(r3), 4\n", 2, 16,
     "operand 'a' of vadd.i8 must be a memory operand offset(rN)"),
    (".core 0\naddi r1, 4, 4\n", 2, 10, "operand 'rs' of addi must be a register r0..r15"),
    (".core 0\nvshl.i32 0(r1), 0(r2), 32, 4\n", 2, 24,
     "32 out of range for operand 'imm' of vshl.i32: 0..31"),
    (".core 0\nfill 0(r1), 256, 4\n", 2, 13, "256 out of range for operand 'value' of fill"),
    (".core 0\nld 0(r1), 0x80000000(r2), 4\n", 2, 11,
     "2147483648 out of range for operand 'src' of ld"),
    (".core 0\nli r16, 1\n", 2, 4, "register r16 out of range r0..r15"),
    (".core 0\nloop: halt\njmp lop\n", 3, 5,
     "undefined label 'lop' in core 0; did you mean 'loop'?"),
    (".core 0\nloop: halt\n.core 1\njmp loop\n", 4, 5, "undefined label 'loop' in core 1"),
    (".core 0\nloop: halt\n\nloop: halt\n", 4, 1,
     "duplicate label 'loop' (first defined at line 2)"),
    (".core 0\n.dat 0x10\n", 2, 1, "unknown directive '.dat'; did you mean '.data'?"),
    (".core 0\nadd r1, r2, r3 @\n", 2, 16, "unexpected character '@'"),
    (".core 0\nadd r1, r2,\n", 2, 12, "unexpected end of line"),
    ("halt\n", 1, 1, "instruction before any .core directive"),
    (".core 0\n.word 1\n", 2, 1, ".word outside a .data or .global_data block"),
    (".core 0\n.data 0\n.byte 300\n", 3, 7, ".byte value 300 out of range -128..255"),
    (".input x, 0, i8, [2], 0.5, 200\n", 1, 28, "zero point out of range -128..127 for i8"),
    (".input x, 0, f32, [2], 0.5, 0\n", 1, 14, "unknown dtype 'f32'"),
    (".input x, 0, i8, 2, 0.5, 0\n", 1, 18,
     "bad argument for .input: expected .input NAME, ADDR, DTYPE, [SHAPE], SCALE, ZP"),
    (".core 1\n.core 1\n", 2, 7, "core 1 already has a section (line 1)"),
]


@pytest.mark.parametrize("text,line,column,message", ERRORS, ids=[e[3][:30] for e in ERRORS])
def test_errors_name_file_line_column_and_show_a_caret(text, line, column, message):
    with pytest.raises(CimcError) as info:
        assemble_text(text, "bad.s")
    error = info.value
    assert message in error.message
    assert (error.location.file, error.location.line, error.location.column) == (
        "bad.s", line, column)
    shown = str(error).splitlines()
    assert shown[0].startswith(f"bad.s:{line}:{column}: error: ")
    assert shown[1] == text.splitlines()[line - 1]
    assert shown[2] == " " * (column - 1) + "^"


def test_binary_round_trip_and_corrupt_binaries_are_rejected():
    program = assemble_text(LOOP)
    blob = encode_program(program)
    assert blob.startswith(b"CIMCPROG")
    assert decode_program(blob) == program
    with pytest.raises(CimcError, match=r"p\.bin: corrupt program binary at byte \d+: truncated"):
        decode_program(blob[:-3], "p.bin")
    with pytest.raises(CimcError, match="trailing garbage"):
        decode_program(blob + b"\0", "p.bin")
    bad_opcode = blob[:-16] + bytes(16)
    with pytest.raises(CimcError, match="core 2 instruction 5: unknown opcode 0x00"):
        decode_program(bad_opcode, "p.bin")


def test_encoder_rejects_values_out_of_range_with_the_source_location():
    program = assemble_text(".core 0\nli r1, 1\n", "p.s")
    program.streams[0].instructions[0].operands = (1 << 4, 1)
    with pytest.raises(CimcError, match=r"p\.s:2:1: li: rd = 16 out of range 0\.\.15"):
        encode_program(program)


def test_disassembly_synthesizes_labels_and_reassembles():
    text = disassemble(assemble_text(LOOP))
    assert "L0:\n    ld 0(r3), 16(r1), 32\n" in text
    assert "    blt r1, r2, L0\n" in text
    assert ".core 0\n    jmp L0\nL0:\n" in text
    assert '.output "out:1", 0x40, i8, [10], 0.01, -3\n' in text
    assert assemble_text(text) == assemble_text(LOOP)


def test_cli_asm_then_disasm_round_trips(tmp_path, capsys):
    source = tmp_path / "prog.s"
    source.write_text(LOOP)
    assert main(["asm", str(source)]) == 0
    binary = tmp_path / "prog.bin"
    assert load_program(binary) == assemble_text(LOOP)
    assert main(["disasm", str(binary), "-o", str(tmp_path / "back.s")]) == 0
    back = (tmp_path / "back.s").read_text()
    assert assemble_text(back) == assemble_text(LOOP)
    assert main(["disasm", str(binary)]) == 0
    assert capsys.readouterr().out == back
    assert load_program(source) == load_program(binary)


def test_cli_errors_exit_nonzero_without_traceback_or_output(tmp_path, capsys):
    bad = tmp_path / "bad.s"
    bad.write_text(".core 0\n    jmp nowhere\n")
    out = tmp_path / "bad.bin"
    assert main(["asm", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert re.match(r"cimc: .*bad\.s:2:9: error: undefined label 'nowhere' in core 0\n", err)
    assert "Traceback" not in err
    assert not out.exists()
    assert main(["disasm", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.s: not a cimc program binary" in err and "Traceback" not in err
    assert main(["asm", str(tmp_path / "missing.s")]) == 1
    assert "cannot read assembly file" in capsys.readouterr().err
