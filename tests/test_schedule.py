"""schedule and place on a model spread over the tiny target's cores: every
send has its receive, messages agree with the program, placements are valid."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import backend_models
import pytest

import cimc
from cimc.dialect.chip import blocks_of
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image


def executed(instructions: list) -> list:  # -> list[Instruction]
    """The instructions of a stream in the order they run (control flow is scalar only)."""
    regs = [0] * 16
    pc, out = 0, []
    while pc < len(instructions):
        ins = instructions[pc]
        o, pc = ins.operands, pc + 1
        if ins.mnemonic == "li":
            regs[o[0]] = o[1]
        elif ins.mnemonic == "addi":
            regs[o[0]] = regs[o[1]] + o[2]
        elif ins.mnemonic in ("blt", "bne"):
            taken = regs[o[0]] < regs[o[1]] if ins.mnemonic == "blt" else regs[o[0]] != regs[o[1]]
            pc = o[2] if taken else pc
        elif ins.mnemonic == "halt":
            break
        regs[0] = 0
        out.append(ins)
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[cimc.Program, Path]:
    prog = tmp_path_factory.mktemp("tiny") / "prog.s"
    model = backend_models.quantized_model("mnist_tiny")
    program = cimc.compile(model, "tiny")
    program.save(prog)
    return program, prog


def test_every_send_has_a_matching_receive(compiled: tuple[cimc.Program, Path]) -> None:
    _, prog = compiled
    program = assemble_file(prog)
    sends: Counter[tuple[int, int, int, int]] = Counter()
    recvs: Counter[tuple[int, int, int, int]] = Counter()
    for core, stream in program.streams.items():
        for ins in executed(stream.instructions):
            if ins.mnemonic == "send":  # core, src(base, offset), len, tag
                sends[(core, ins.operands[0], ins.operands[3], ins.operands[4])] += 1
            elif ins.mnemonic == "recv":
                recvs[(ins.operands[0], core, ins.operands[3], ins.operands[4])] += 1
    assert sends and sends == recvs


def test_receives_on_each_channel_come_in_send_order(compiled: tuple[cimc.Program, Path]) -> None:
    """Per (sender, receiver, tag) the receiver takes messages in the order and sizes sent."""
    _, prog = compiled
    program = assemble_file(prog)
    sent: dict[tuple[int, int, int], list[int]] = {}
    taken: dict[tuple[int, int, int], list[int]] = {}
    for core, stream in program.streams.items():
        for ins in executed(stream.instructions):
            if ins.mnemonic == "send":
                sent.setdefault((core, ins.operands[0], ins.operands[4]), []).append(
                    ins.operands[3])
            elif ins.mnemonic == "recv":
                taken.setdefault((ins.operands[0], core, ins.operands[4]), []).append(
                    ins.operands[3])
    assert sent and sent == taken


def test_no_global_sync_and_only_model_io_in_global_memory(
        compiled: tuple[cimc.Program, Path]) -> None:
    _, prog = compiled
    text = prog.read_text()
    assert "sync" not in text.split()
    program = assemble_file(prog)
    loads = sum(ins.mnemonic == "ld" for s in program.streams.values() for ins in s.instructions)
    assert 0 < loads <= 28  # the 28 input rows, nothing else comes from global memory


def test_placement_fits_the_target_and_the_image(compiled: tuple[cimc.Program, Path]) -> None:
    result, prog = compiled
    target = result.target
    image = load_image(prog.with_suffix(".img"))
    for op in result.module.ops():
        if op.kind != "matvec":
            continue
        s = op.attrs["slices"]
        for k in range(len(blocks_of(op))):
            core, group = op.attrs["block_cores"][k], op.attrs["block_groups"][k]
            assert 0 <= core < target.cores
            placed = image.cores[core].groups[group]
            slices = op.attrs["block_slices"][2 * k * s:2 * (k + 1) * s]
            assert [(p.crossbar, p.col) for p in placed.slices] == list(zip(slices[::2],
                                                                          slices[1::2],
                                                                          strict=True))
            assert all(p.crossbar < target.crossbars_per_core for p in placed.slices)
    for number, code in result.cores.items():
        assert code.peak <= code.top <= target.local_memory_bytes, f"core {number}"


def test_program_size_does_not_grow_with_the_stream(tmp_path: Path) -> None:
    """Repeating rows and streamed images are loops: 32 images take no more code than 8."""
    import models

    model = str(models.quantized_model("residual"))
    sizes = {}
    for stream in (8, 32):
        compiled = cimc.compile(model, "pimcomp", pipeline="throughput", stream=stream)
        sizes[stream] = sum(len(c.lines) for c in compiled.cores.values())
    assert sizes[32] <= sizes[8] * 1.05
