"""Property tests: random valid programs survive text and binary round trips.

text -> Program -> binary -> Program -> text -> Program is the identity, the
disassembly of a program is a fixed point of text -> binary -> text, and any
spelling of a program (hex or decimal, comments, spacing, label names)
assembles to the same Program.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cimc.isa.assembler import assemble_text
from cimc.isa.disassembler import disassemble
from cimc.isa.encoding import decode_program, encode_program
from cimc.isa.program import CoreStream, DataSegment, Instruction, IODecl, Program
from cimc.isa.table import BY_MNEMONIC, SPECS

ZP_RANGE = {"i8": (-128, 127), "u8": (0, 255), "i32": (-(1 << 31), (1 << 31) - 1)}
names = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.$]{0,8}", fullmatch=True),
                  st.text(max_size=8))


@st.composite
def io_decls(draw: st.DrawFn) -> IODecl:
    dtype = draw(st.sampled_from(sorted(ZP_RANGE)))
    return IODecl(
        name=draw(names),
        addr=draw(st.integers(0, 1 << 40)),
        dtype=dtype,
        shape=tuple(draw(st.lists(st.integers(1, 4096), max_size=4))),
        scale=draw(st.floats(min_value=1e-300, max_value=1e300)),
        zp=draw(st.integers(*ZP_RANGE[dtype])),
    )


@st.composite
def streams(draw: st.DrawFn, core: int) -> CoreStream:
    count = draw(st.integers(0, 12))
    instructions = []
    for _ in range(count):
        spec = draw(st.sampled_from(SPECS))
        kinds = [op.kind for op in spec.operands for _ in op.fields]
        values = tuple(draw(st.integers(0, count)) if kind == "label"
                       else draw(st.integers(f.min, f.max))
                       for f, kind in zip(spec.fields, kinds, strict=True))
        instructions.append(Instruction(spec.mnemonic, values))
    return CoreStream(core, instructions)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    cores = sorted(draw(st.lists(st.integers(0, (1 << 16) - 1), max_size=3, unique=True)))
    decls = draw(st.lists(io_decls(), max_size=4, unique_by=lambda d: d.name))
    split = draw(st.integers(0, len(decls)))
    data = {}
    for core in cores:
        segments = draw(st.lists(st.builds(DataSegment, st.integers(0, 1 << 32),
                                           st.binary(max_size=24)), max_size=2))
        if segments:
            data[core] = segments
    return Program(
        target=draw(st.none() | names),
        image=draw(st.none() | st.text(max_size=12)),
        inputs=decls[:split],
        outputs=decls[split:],
        streams={core: draw(streams(core)) for core in cores},
        data=data,
    )


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(programs())
def test_text_binary_text_round_trip_is_identity(program):
    text = disassemble(program)
    from_text = assemble_text(text, "rt.s")
    assert from_text == program
    from_binary = decode_program(encode_program(from_text))
    assert from_binary == program
    again = disassemble(from_binary)
    assert again == text
    assert assemble_text(again) == program


def _number(draw: st.DrawFn, value: int) -> str:
    return hex(value) if draw(st.booleans()) else str(value)


def _spell(draw: st.DrawFn, program: Program) -> str:
    """An arbitrary but valid spelling of the instructions of `program`."""
    pad = st.sampled_from(["", " ", "\t", "   "])
    comment = st.sampled_from(["", " # note", " ; x: y, (r1)", "#", ";;"])
    lines = []
    for core, stream in program.streams.items():
        lines.append(f"{draw(pad)}.core {_number(draw, core)}{draw(comment)}")
        prefix = draw(st.sampled_from(["loop", "L", "_b", "target_"]))
        chunks: list[list[str]] = []  # the lines of each instruction
        targets = set()
        for ins in stream.instructions:
            values = iter(ins.operands)
            texts = []
            for op in BY_MNEMONIC[ins.mnemonic].operands:
                if op.kind in ("mem", "gmem"):
                    base, offset = next(values), next(values)
                    shown = "" if offset == 0 and draw(st.booleans()) else _number(draw, offset)
                    texts.append(f"{shown}({draw(pad)}r{base}{draw(pad)})")
                elif op.kind == "reg":
                    texts.append(f"r{next(values)}")
                elif op.kind == "label":
                    target = next(values)
                    targets.add(target)
                    texts.append(f"{prefix}{target}")
                else:
                    texts.append(_number(draw, next(values)))
            sep = draw(pad) + "," + draw(pad)
            chunk = [f"{draw(pad)}{ins.mnemonic} {sep.join(texts)}{draw(comment)}"]
            if draw(st.booleans()):
                chunk.append(draw(comment))
            chunks.append(chunk)
        chunks.append([])  # a label may follow the last instruction
        for index, chunk in enumerate(chunks):
            if index in targets:
                label = f"{prefix}{index}:{draw(pad)}"
                if chunk and draw(st.booleans()):
                    chunk[0] = label + chunk[0]
                else:
                    chunk.insert(0, label)
            lines += chunk
    return "\n".join(lines) + "\n"


@SETTINGS
@given(st.data(), programs())
def test_any_spelling_assembles_to_the_same_program(data, program):
    program.inputs, program.outputs, program.data = [], [], {}
    program.target = program.image = None
    text = _spell(data.draw, program)
    assert assemble_text(text, "spelled.s") == program, text
