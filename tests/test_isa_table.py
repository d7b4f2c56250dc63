"""The instruction table: sound encodings, complete against the machine
contract, every field value encodable, and the generated reference current."""

from dataclasses import replace

import pytest

from cimc.isa import docgen
from cimc.isa.encoding import decode_word, encode_word
from cimc.isa.program import Instruction
from cimc.isa.table import (
    BY_MNEMONIC,
    SPECS,
    WORD_BITS,
    Field,
    InstructionSpec,
    Operand,
    check_table,
    parse_table,
)


def test_bundled_table_is_sound():
    assert check_table() == []
    assert len(SPECS) == 67


def test_checker_reports_two_instructions_with_one_opcode():
    clash = replace(BY_MNEMONIC["vadd.u8"], mnemonic="vfoo.u8", opcode=0x20)
    problems = check_table(SPECS + (clash,))
    assert problems == ["vadd.i8 and vfoo.u8: encodings overlap"]


def test_checker_reports_field_past_the_word_end():
    wide = Operand("imm", "s64", (Field("imm", WORD_BITS - 8, 16, True, -5, 5),))
    spec = InstructionSpec("wide", 0xF0, "scalar", (wide,), "")
    assert check_table((spec,)) == [
        f"wide: field imm [{WORD_BITS + 7}:{WORD_BITS - 8}] is outside the 128-bit word"]


def test_checker_reports_overlapping_fields():
    a = Operand("a", "u8", (Field("a", 8, 8, False, 0, 255),))
    b = Operand("b", "u8", (Field("b", 12, 8, False, 0, 255),))
    spec = InstructionSpec("both", 0xF0, "scalar", (a, b), "")
    assert check_table((spec,)) == ["both: field b overlaps another field"]


def test_checker_reports_operand_range_too_wide_for_its_field():
    byte = Operand("v", "byte", (Field("v", 8, 8, True, -128, 255),))
    spec = InstructionSpec("bytes", 0xF0, "copy", (byte,), "")
    assert check_table((spec,)) == ["bytes: field v range [-128, 255] does not fit 8 bits"]


def test_checker_reports_opcode_too_wide_and_unknown_class():
    spec = InstructionSpec("big", 0x100, "magic", (), "")
    assert check_table((spec,)) == [
        "big: unknown cost class 'magic'",
        "big: field opcode range [256, 256] does not fit 8 bits",
    ]


def test_table_lines_expand_type_suffixes_with_consecutive_opcodes():
    specs = parse_table("vfoo.T 0x80 i8,i32 vector dst:mem n:u24\n    dst_{T}[i] = 0\n")
    assert [(s.mnemonic, s.opcode, s.semantics) for s in specs] == [
        ("vfoo.i8", 0x80, "dst_i8[i] = 0"), ("vfoo.i32", 0x82, "dst_i32[i] = 0")]
    assert [(f.name, f.lo, f.width) for f in specs[0].fields] == [
        ("dst.base", 8, 4), ("dst.offset", 12, 24), ("n", 36, 24)]


# Every instruction of the machine contract (notes: machine_spec.md), with the
# type suffixes it names.
CONTRACT = [
    "li", "addi", "add", "sub", "mul", "bne", "blt", "jmp", "halt", "sync",
    "mvm.i8", "mvm.u8", "mvm.acc.i8", "mvm.acc.u8",
    *(f"{op}.{t}" for op in ("vadd", "vsub", "vmul", "vmax", "vmin", "vaddi", "vmaxi", "vmini",
                             "vshl", "vshr", "vredmax", "vredsum") for t in ("i8", "u8", "i32")),
    *(f"{op}.{t}" for op in ("vscale", "requant", "vlut") for t in ("i8", "u8")),
    "vdiv.i32",  # issue 13: a softmax's division by its row sum
    "visqrt.i32",  # issue 13: a LayerNorm's reciprocal standard deviation
    "copy", "fill", "ld", "st", "send", "recv",
    "wprog",  # issue 12: reprogramming crossbars between phases
    "vgather.i8", "vgather.u8",  # issue 13: the data movement of layout ops
]


def test_table_has_every_contract_instruction():
    assert sorted(CONTRACT) == sorted(BY_MNEMONIC)


def test_copy_operands_follow_the_contract_order():
    assert BY_MNEMONIC["copy"].syntax == "copy dst, src, len, reps, dst_stride, src_stride"
    assert [op.kind for op in BY_MNEMONIC["ld"].operands] == ["mem", "gmem", "u24"]
    assert [op.kind for op in BY_MNEMONIC["st"].operands] == ["gmem", "mem", "u24"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.mnemonic)
def test_extreme_field_values_encode_and_decode_unchanged(spec):
    for pick in (lambda f: f.min, lambda f: f.max, lambda f: (f.min + f.max) // 2):
        ins = Instruction(spec.mnemonic, tuple(pick(f) for f in spec.fields))
        word = encode_word(ins)
        assert 0 <= word < 1 << WORD_BITS
        assert decode_word(word) == ins


def test_decoder_rejects_reserved_bits_and_unknown_opcodes():
    with pytest.raises(ValueError, match="reserved bits"):
        decode_word(encode_word(Instruction("halt", ())) | 1 << 100)
    with pytest.raises(ValueError, match="unknown opcode 0x00"):
        decode_word(0)


def test_docs_isa_md_is_current():
    current = docgen.DOC.read_text()
    assert docgen.render(current) == current, "docs/isa.md is stale: run python -m cimc.isa.docgen"
    for spec in SPECS:
        assert f"`{spec.syntax}`" in current
