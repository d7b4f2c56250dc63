"""Translated blocks (isa/simulator/blocks.py) against the plain interpreter.

SimOptions(blocks=False) interprets every instruction one by one; the default
runs straight-line code and counted loops as translated Python. Both must
give the same outputs and the same report (cycles, energy, counters) on
programs where they could differ: loops whose MVM results are read while in
flight, branches of every kind, cores talking inside loops, step limits and
faults inside a translated loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.isa.assembler import assemble_text
from cimc.isa.image import Image, load_image
from cimc.isa.simulator import SimOptions, batch, simulate
from cimc.isa.simulator import blocks as translation
from cimc.isa.simulator.batch import run_loop
from cimc.targets import load_target

TINY = load_target("tiny")
RNG = np.random.default_rng(7)
W = RNG.integers(-128, 128, size=(16, 8))
W2 = RNG.integers(-128, 128, size=(16, 8))
MNIST = Path(__file__).resolve().parents[1] / "examples" / "mnist"


def both(source: str, inputs: dict[str, np.ndarray], image: Image | None,
         **options: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run translated and interpreted; assert they agree; the translated result."""
    program = assemble_text(source, "prog.s")
    fast = simulate(program, image, TINY, inputs, SimOptions(**options))
    slow = simulate(program, image, TINY, inputs, SimOptions(blocks=False, **options))
    assert fast.outputs.keys() == slow.outputs.keys()
    for name in fast.outputs:
        np.testing.assert_array_equal(fast.outputs[name], slow.outputs[name])
    assert fast.report == slow.report
    return fast.outputs, fast.report


def image_of(*groups: np.ndarray) -> Image:
    image = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    for core in (0, 1):
        for gid, w in enumerate(groups):
            image.core(core, crossbars=TINY.crossbars_per_core).add_group(gid, w, 8,
                                                                          TINY.cell_bits)
    return image


# A loop that reads MVM results in flight (vadd, requant-free sums), accumulates into
# one in flight, branches with blt, bne and jmp, and whose body also has a copy and fill.
LOOP = """
.input x, 0, i8, [6, 16], 1.0, 0
.output y, 0x400, i32, [6, 8], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 96
    li r1, 0            # input offset
    li r2, 0x400        # output address
    li r3, 96
    li r4, 0
loop:
    copy 128(r0), 0(r1), 16, 1, 16, 16
    mvm.i8 0, 160(r0), 128(r0)
    mvm.acc.i8 1, 160(r0), 128(r0)
    vadd.i32 192(r0), 160(r0), 160(r0), 8
    vsub.i32 192(r0), 192(r0), 160(r0), 8
    fill 224(r0), 0, 4
    addi r1, r1, 16
    addi r4, r4, 1
    st 0(r2), 192(r0), 32
    addi r2, r2, 32
    blt r1, r3, loop
    li r5, 3
count:
    addi r5, r5, -1
    mul r6, r5, r5
    sub r7, r6, r5
    bne r5, r0, count
    jmp done
    li r8, 99
done:
    halt
"""


@pytest.mark.parametrize("bit_level", [False, True], ids=["exact", "bit-level"])
def test_a_loop_reading_mvm_results_in_flight_matches_the_interpreter(bit_level: bool) -> None:
    x = RNG.integers(-128, 128, size=(5, 6, 16)).astype(np.int8)
    out, report = both(LOOP, {"x": x}, image_of(W, W2), bit_level=bit_level)
    np.testing.assert_array_equal(out["y"], x.astype(np.int64) @ (W + W2))
    assert report["mvm_instructions"] == 12


def test_cores_exchanging_messages_inside_loops_match_the_interpreter() -> None:
    source = """
.input x, 0, i8, [4, 16], 1.0, 0
.output y, 0x400, i32, [4, 8], 1.0, 0
.core 0
    li r1, 0
    li r3, 64
send_loop:
    ld 0(r0), 0(r1), 16
    mvm.i8 0, 32(r0), 0(r0)
    send 1, 32(r0), 32, 5
    addi r1, r1, 16
    blt r1, r3, send_loop
.core 1
    li r1, 0x400
    li r3, 0x480
recv_loop:
    recv 0, 64(r0), 32, 5
    vadd.i32 96(r0), 64(r0), 64(r0), 8
    vsub.i32 96(r0), 96(r0), 64(r0), 8
    st 0(r1), 96(r0), 32
    addi r1, r1, 32
    blt r1, r3, recv_loop
"""
    x = RNG.integers(-128, 128, size=(3, 4, 16)).astype(np.int8)
    out, _ = both(source, {"x": x}, image_of(W))
    np.testing.assert_array_equal(out["y"], x.astype(np.int64) @ W)


SPIN = """
.core 0
    li r1, 0
spin:
    addi r1, r1, 1
    addi r2, r2, 3
    jmp spin
"""


@pytest.mark.parametrize("steps", [50, 51, 52, 53])
def test_the_step_limit_stops_at_the_same_instruction(steps: int) -> None:
    program = assemble_text(SPIN, "prog.s")
    messages = []
    for blocks in (True, False):
        with pytest.raises(CimcError, match="step limit") as caught:
            simulate(program, None, TINY, {}, SimOptions(max_steps=steps, blocks=blocks))
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_a_fault_inside_a_translated_loop_names_the_same_line() -> None:
    source = """
.core 0
    li r1, 0
    li r2, 1000000
walk:
    fill 0(r1), 1, 16
    add r1, r1, r2
    jmp walk
"""
    program = assemble_text(source, "prog.s")
    messages = []
    for blocks in (True, False):
        with pytest.raises(CimcError, match=r"prog.s:6") as caught:
            simulate(program, None, TINY, {}, SimOptions(blocks=blocks))
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "`fill`" in messages[0] and "outside" in messages[0]


def test_a_compiled_model_matches_the_interpreter_bit_for_bit(tmp_path: Path) -> None:
    prog = tmp_path / "prog.s"
    assert main([str(MNIST / "mnist_cnn_qdq.onnx"), "-o", str(prog), "--target", "isaac"]) == 0
    program = assemble_text(prog.read_text(), str(prog))
    image = load_image(tmp_path / "prog.img")
    target = load_target("isaac")
    decl = program.inputs[0]
    info = np.iinfo(np.dtype(np.uint8 if decl.dtype == "u8" else np.int8))
    x = RNG.integers(info.min, info.max + 1, size=(3, *decl.shape)).astype(info.dtype)
    fast = simulate(program, image, target, {decl.name: x})
    slow = simulate(program, image, target, {decl.name: x}, SimOptions(blocks=False))
    for name in fast.outputs:
        np.testing.assert_array_equal(fast.outputs[name], slow.outputs[name])
    assert fast.report == slow.report
    assert fast.report["mvm_instructions"] > 0


# Register arithmetic at the edges of 64 bits, inside translated loops: an immediate add
# that wraps up or down (blocks test one side per sign), add, sub and mul that wrap. Each
# result is used as an address, so a wrong wrap moves a byte or never leaves a loop.
WRAP = """
.output y, 0, i8, [16], 1.0, 0
.core 0
    li r1, 9223372036854775805
    li r4, 0
up:
    addi r1, r1, 1
    addi r4, r4, 1
    blt r0, r1, up          # three times: 2^63 - 1 + 1 wraps to -2^63
    li r2, -9223372036854775806
down:
    addi r2, r2, -1
    addi r4, r4, 1
    blt r2, r0, down        # three times: -2^63 - 1 wraps to 2^63 - 1
    fill 0(r4), 1, 1
    li r3, 2
    li r5, 4611686018427387904
    li r7, 3
    li r11, 9223372036854775807
    li r13, -9223372036854775808
checks:
    mul r6, r5, r5          # 2^124 wraps to 0
    fill 8(r6), 2, 1
    mul r8, r5, r7          # 3 * 2^62 wraps to -2^62
    add r9, r8, r5
    fill 9(r9), 3, 1
    add r12, r11, r11       # wraps to -2
    fill 12(r12), 4, 1
    sub r14, r0, r13        # 2^63 wraps to -2^63
    sub r15, r14, r13
    fill 11(r15), 5, 1
    addi r3, r3, -1
    bne r3, r0, checks
    st 0(r0), 0(r0), 16
    halt
"""


def test_register_arithmetic_wraps_at_64_bits_as_in_the_interpreter() -> None:
    out, report = both(WRAP, {}, None)
    expected = np.zeros(16, np.int8)
    expected[[6, 8, 9, 10, 11]] = [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(out["y"][0], expected)
    assert report["instructions"] == 53


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each try at running a loop whole (batch.run_loop) was taken."""
    taken: list[bool] = []

    def recorded(*args: Any) -> Any:
        done = run_loop(*args)
        taken.append(done is not None)
        return done

    monkeypatch.setattr(translation, "run_loop", recorded)
    return taken


# Elementwise instructions over moving windows, every operand layout and element type,
# saturating and wrapping; one place written in every iteration (the last stays); registers
# the loop leaves behind used afterwards.
ELEMENTWISE_LOOP = """
.input x, 0, i8, [64], 1.0, 0
.input u, 64, u8, [64], 1.0, 0
.input w, 128, i32, [16], 1.0, 0
.output y, 0x1000, i8, [64], 1.0, 0
.output v, 0x1040, u8, [64], 1.0, 0
.output s, 0x1080, i8, [64], 1.0, 0
.output m, 0x10c0, u8, [64], 1.0, 0
.output p, 0x1100, i32, [16], 1.0, 0
.output last, 0x1140, i8, [16], 1.0, 0
.output after, 0x1150, u8, [16], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 192
    li r1, 0
    li r2, 64
    li r3, 0
loop:
    vadd.i8 256(r1), 0(r1), 16(r0), 16
    vsub.u8 320(r1), 64(r1), 80(r0), 16
    vshl.i8 384(r1), 0(r1), 3, 16
    vmaxi.u8 448(r1), 64(r1), 100, 16
    vmul.i32 512(r3), 128(r3), 144(r0), 4
    vmin.i8 576(r0), 0(r1), 32(r0), 16
    addi r1, r1, 16
    addi r3, r3, 16
    blt r1, r2, loop
    fill 592(r1), 7, 16
    st 0x1000(r0), 256(r0), 336
    st 0x1150(r0), 656(r0), 16
"""


@pytest.mark.parametrize("elements", [None, 100], ids=["whole", "in-pieces"])
def test_a_loop_of_elementwise_instructions_runs_whole_as_interpreted(
        elements: int | None, batched: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    if elements is not None:  # room for two iterations a batch: the loop in two batches
        monkeypatch.setattr(batch, "_ELEMENTS", elements)
    x = RNG.integers(-128, 128, size=(3, 64)).astype(np.int8)
    u = RNG.integers(0, 256, size=(3, 64)).astype(np.uint8)
    w = RNG.integers(-2**31, 2**31, size=(3, 16)).astype(np.int32)
    out, _ = both(ELEMENTWISE_LOOP, {"x": x, "u": u, "w": w}, None)
    assert batched == ([True] if elements is None else [True, True])
    x64, u64, w64 = x.astype(np.int64), u.astype(np.int64), w.astype(np.int64)
    windows = x64.reshape(3, 4, 16)
    np.testing.assert_array_equal(out["y"], np.clip(windows + x64[:, None, 16:32], -128, 127)
                                  .reshape(3, 64))
    np.testing.assert_array_equal(out["v"], np.clip(u64 - np.tile(u64[:, 16:32], 4), 0, 255))
    np.testing.assert_array_equal(out["s"], np.clip(x64 << 3, -128, 127))
    np.testing.assert_array_equal(out["m"], np.maximum(u64, 100))
    np.testing.assert_array_equal(out["p"], (w64 * np.tile(w64[:, 4:8], 4)).astype(np.int32))
    np.testing.assert_array_equal(out["last"], np.minimum(x64[:, 48:64], x64[:, 32:48]))
    np.testing.assert_array_equal(out["after"], np.full((3, 16), 7))  # r1 = 64 after


@pytest.mark.parametrize("body", [
    "vadd.i8 512(r0), 512(r0), 0(r1), 16",  # reads what it wrote an iteration before
    "vadd.i8 16(r1), 0(r1), 0(r1), 16",  # writes what the next iteration reads
    "vadd.i8 512(r1), 0(r1), 0(r1), 32",  # its places overlap: 32 bytes every 16
    "vadd.i8 512(r1), 0(r1), 0(r1), 16\n    vmax.i8 768(r1), 512(r1), 0(r1), 16",  # a chain
    "vadd.i8 512(r0), 0(r1), 0(r1), 16\n    vsub.i8 512(r0), 0(r1), 16(r1), 16",  # both write
], ids=["accumulates", "feeds-next", "overlapping", "chained", "two-writers"])
def test_a_loop_whose_iterations_see_each_other_runs_one_at_a_time(
        body: str, batched: list[bool]) -> None:
    source = f"""
.input x, 0, i8, [96], 1.0, 0
.output y, 0x1000, i8, [512], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 96
    li r1, 0
    li r2, 64
loop:
    {body}
    addi r1, r1, 16
    blt r1, r2, loop
    st 0x1000(r0), 512(r0), 512
"""
    x = RNG.integers(-128, 128, size=(3, 96)).astype(np.int8)
    both(source, {"x": x}, None)
    assert batched == [False]


def test_a_loop_reading_an_mvm_result_in_flight_runs_one_at_a_time(
        batched: list[bool]) -> None:
    source = """
.input x, 0, i8, [16], 1.0, 0
.output y, 0x1000, i32, [32], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    mvm.i8 0, 64(r0), 0(r0)
    li r1, 0
    li r2, 128
loop:
    vadd.i32 128(r1), 64(r0), 64(r0), 8
    addi r1, r1, 32
    blt r1, r2, loop
    st 0x1000(r0), 128(r0), 128
"""
    x = RNG.integers(-128, 128, size=(3, 16)).astype(np.int8)
    out, _ = both(source, {"x": x}, image_of(W))
    assert batched == [False]
    np.testing.assert_array_equal(out["y"], np.tile(2 * (x.astype(np.int64) @ W), 4))


@pytest.mark.parametrize("steps", [60, 61, 62])
def test_a_batched_loop_stops_at_the_step_limit_where_the_interpreter_does(steps: int) -> None:
    source = """
.core 0
    li r1, 0
spin:
    vaddi.i8 64(r0), 0(r0), 1, 16
    addi r1, r1, 1
    jmp spin
"""
    program = assemble_text(source, "prog.s")
    messages = []
    for blocks_on in (True, False):
        with pytest.raises(CimcError, match="step limit") as caught:
            simulate(program, None, TINY, {}, SimOptions(max_steps=steps, blocks=blocks_on))
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_a_batched_loop_walking_out_of_memory_faults_at_the_same_line() -> None:
    source = """
.core 0
    li r1, 0
walk:
    vaddi.i8 0(r1), 0(r0), 1, 16
    addi r1, r1, 4096
    jmp walk
"""
    program = assemble_text(source, "prog.s")
    messages = []
    for blocks_on in (True, False):
        with pytest.raises(CimcError, match=r"prog.s:5.*outside") as caught:
            simulate(program, None, TINY, {}, SimOptions(blocks=blocks_on))
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
