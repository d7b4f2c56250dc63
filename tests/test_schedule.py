"""schedule and place on a model spread over the tiny target's cores: every
send has its receive, messages agree with the program, placements are valid."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import backend_models
import pytest

from cimc.commands.compile import Compiled, compile_model
from isa.assembler import assemble_file
from isa.image import load_image
from passes.tile import blocks_of


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Compiled, Path]:
    prog = tmp_path_factory.mktemp("tiny") / "prog.s"
    model = backend_models.quantized_model("mnist_tiny")
    return compile_model(str(model), str(prog), "tiny"), prog


def test_every_send_has_a_matching_receive(compiled: tuple[Compiled, Path]) -> None:
    _, prog = compiled
    program = assemble_file(prog)
    sends: Counter[tuple[int, int, int, int]] = Counter()
    recvs: Counter[tuple[int, int, int, int]] = Counter()
    for core, stream in program.streams.items():
        for ins in stream.instructions:
            if ins.mnemonic == "send":  # core, src(base, offset), len, tag
                sends[(core, ins.operands[0], ins.operands[3], ins.operands[4])] += 1
            elif ins.mnemonic == "recv":
                recvs[(ins.operands[0], core, ins.operands[3], ins.operands[4])] += 1
    assert sends and sends == recvs


def test_messages_list_the_partial_sums_sent(compiled: tuple[Compiled, Path]) -> None:
    result, _ = compiled
    for op in result.module.ops():
        if op.kind != "matvec":
            continue
        m = op.attrs["messages"]
        for src, dst, size, count, tag in zip(*(m[f::5] for f in range(5)), strict=True):
            assert src != dst and dst in op.attrs["reducers"] and tag in op.attrs["tags"]
            assert count == result.module.values[op.outputs[0]].size // (
                result.module.values[op.outputs[0]].shape[1])
            assert size % 4 == 0 and size // 4 <= op.attrs["block_cols"]


def test_placement_fits_the_target_and_the_image(compiled: tuple[Compiled, Path]) -> None:
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
        for j, reducer in enumerate(op.attrs["reducers"]):
            owners = [c for (_, jj), c in zip(blocks_of(op), op.attrs["block_cores"],
                                              strict=True) if jj == j]
            assert reducer in owners
    for number, code in result.cores.items():
        assert code.peak <= code.top <= target.local_memory_bytes, f"core {number}"
