"""Reprogramming crossbars between phases (issue 12): the wprog instruction, phased images,
the simulator's record of which group each crossbar region holds, wprog's time and
energy, and the target keys that price it."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cimc.diagnostics import CimcError
from cimc.isa.assembler import assemble_text
from cimc.isa.disassembler import disassemble
from cimc.isa.encoding import decode_program, decode_word, encode_program, encode_word
from cimc.isa.image import MAGIC, Image, Slice, load_image, save_image
from cimc.isa.program import Instruction
from cimc.isa.simulator import SimOptions, run_program
from cimc.isa.simulator.reprogram import program_cycles
from cimc.isa.simulator.timing import instruction_cost
from cimc.isa.table import BY_MNEMONIC
from cimc.targets import TargetError, load_target, parse_target

TINY = load_target("tiny")
RNG = np.random.default_rng(12)
W0 = RNG.integers(-128, 128, size=(16, 8))
W1 = RNG.integers(-128, 128, size=(16, 8))
W2 = RNG.integers(-128, 128, size=(12, 4))
X = RNG.integers(-128, 128, size=(20, 16)).astype(np.int8)
# Four 2-bit slices of a 16x8 group of 8-bit weights: two crossbars, both halves of each.
SHARED = [Slice(0, 0, 0), Slice(0, 0, 8), Slice(1, 0, 0), Slice(1, 0, 8)]


def phased_image() -> Image:
    """Core 0: group 0 (phase 0) and group 1 (phase 1) on the same cells; group 2 (phase 1)
    on crossbar 2, sharing no cell with either."""
    image = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    core = image.core(0, crossbars=TINY.crossbars_per_core)
    core.add_group(0, W0, 8, TINY.cell_bits, SHARED)
    core.add_group(1, W1, 8, TINY.cell_bits, SHARED, phase=1)
    core.add_group(2, W2, 8, TINY.cell_bits, phase=1)
    return image


def run(source: str, image: Image | None, inputs: dict[str, np.ndarray] | None = None,
        **options: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    program = assemble_text(source, "prog.s")
    return run_program(program, image, TINY, inputs or {}, SimOptions(**options))


# --- (a) two phases' groups on one crossbar ---------------------------------------------

TWO_PHASES = """
.input x, 0, i8, [16], 1.0, 0
.output y0, 0x100, i32, [8], 1.0, 0
.output y1, 0x200, i32, [8], 1.0, 0
.output y2, 0x300, i32, [4], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    wprog 0
    mvm.i8 0, 64(r0), 0(r0)
    st 0x100(r0), 64(r0), 32
    sync
    wprog 1
    wprog 2
    mvm.i8 1, 128(r0), 0(r0)
    mvm.i8 2, 192(r0), 0(r0)
    st 0x200(r0), 128(r0), 32
    st 0x300(r0), 192(r0), 16
    halt
"""


@pytest.mark.parametrize("options", [{}, {"bit_level": True}, {"blocks": False}],
                         ids=["exact", "bit-level", "interpreted"])
def test_groups_of_two_phases_on_one_crossbar_give_exact_results(options: dict) -> None:
    outputs, report = run(TWO_PHASES, phased_image(), {"x": X}, **options)
    np.testing.assert_array_equal(outputs["y0"], X.astype(np.int64) @ W0)
    np.testing.assert_array_equal(outputs["y1"], X.astype(np.int64) @ W1)
    np.testing.assert_array_equal(outputs["y2"], X[:, :12].astype(np.int64) @ W2)
    assert report["programmed_cells"] == 2 * 16 * 8 * 4 + 12 * 4 * 4


@pytest.mark.parametrize("what_if", [{"noise_sigma": 0.3, "seed": 5}, {"adc_bits": 4}],
                         ids=["noise", "adc"])
def test_what_ifs_read_the_cells_the_group_is_written_to(what_if: dict) -> None:
    # Group 1 of the phased image must compute what the same weights compute alone on the
    # same cells of a one-phase image: same digits, same device noise, same ADC.
    alone = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    alone.core(0, crossbars=TINY.crossbars_per_core).add_group(1, W1, 8, TINY.cell_bits, SHARED)
    source = """
.input x, 0, i8, [16], 1.0, 0
.output y, 0x100, i32, [8], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    wprog 1
    mvm.i8 1, 64(r0), 0(r0)
    st 0x100(r0), 64(r0), 32
"""
    phased, _ = run(source, phased_image(), {"x": X}, **what_if)
    single, _ = run(source, alone, {"x": X}, **what_if)
    np.testing.assert_array_equal(phased["y"], single["y"])
    assert not np.array_equal(phased["y"], X.astype(np.int64) @ W1)  # the what-if bites


def test_one_phase_image_needs_no_wprog_and_allows_one() -> None:
    image = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    image.core(0, crossbars=4).add_group(0, W0, 8, TINY.cell_bits)
    source = """
.input x, 0, i8, [16], 1.0, 0
.output y, 0x100, i32, [8], 1.0, 0
.output z, 0x200, i32, [8], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    mvm.i8 0, 64(r0), 0(r0)
    st 0x100(r0), 64(r0), 32
    wprog 0
    mvm.i8 0, 64(r0), 0(r0)
    st 0x200(r0), 64(r0), 32
"""
    outputs, report = run(source, image, {"x": X})
    np.testing.assert_array_equal(outputs["y"], X.astype(np.int64) @ W0)
    np.testing.assert_array_equal(outputs["z"], outputs["y"])
    assert report["programmed_cells"] == 16 * 8 * 4


# --- (b) mvm on a group that does not hold its cells -------------------------------------

def test_mvm_on_an_overwritten_group_is_an_error_naming_line_and_groups() -> None:
    source = ".core 0\n    wprog 0\n    wprog 1\n    mvm.i8 0, 64(r0), 0(r0)\n"
    with pytest.raises(CimcError, match=r"core 0: `mvm.i8` at prog.s:4:5: crossbar group 0 "
                       r"does not hold its weights: `wprog 1` \(instruction 1 at prog.s:3:5\) "
                       r"overwrote its cells"):
        run(source, phased_image())


@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "interpreted"])
def test_mvm_on_a_never_programmed_group_of_a_phased_image_is_an_error(blocks: bool) -> None:
    # Group 2 shares no cell with group 0, but a phased image starts unprogrammed.
    source = ".core 0\n    wprog 0\n    mvm.i8 0, 0(r0), 0(r0)\n    mvm.i8 2, 64(r0), 0(r0)\n"
    with pytest.raises(CimcError, match=r"`mvm.i8` at prog.s:4:5: crossbar group 2 does not "
                       r"hold its weights: it was never programmed"):
        run(source, phased_image(), blocks=blocks)


def test_wprog_of_a_group_missing_from_the_image_is_an_error() -> None:
    with pytest.raises(CimcError, match="group 9 is not in the image for core 0"):
        run(".core 0\n    wprog 9\n", phased_image())


def test_reprogramming_an_overwritten_group_makes_it_usable_again() -> None:
    source = """
.input x, 0, i8, [16], 1.0, 0
.output y, 0x100, i32, [8], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    wprog 0
    wprog 1
    wprog 0
    mvm.i8 0, 64(r0), 0(r0)
    st 0x100(r0), 64(r0), 32
"""
    outputs, _ = run(source, phased_image(), {"x": X})
    np.testing.assert_array_equal(outputs["y"], X.astype(np.int64) @ W0)


def test_a_target_that_cannot_rewrite_its_crossbars_refuses_phases_and_wprog() -> None:
    fixed = dataclasses.replace(TINY, reprogrammable=False)
    program = assemble_text(".core 0\n    wprog 0\n", "prog.s")
    with pytest.raises(CimcError, match=r"image has 2 phases but target 'tiny' cannot rewrite "
                       r"its crossbars between them \(crossbar.reprogrammable = false\)"):
        run_program(program, phased_image(), fixed, {}, SimOptions())
    one_phase = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    one_phase.core(0, crossbars=4).add_group(0, W0, 8, TINY.cell_bits)
    with pytest.raises(CimcError, match=r"`wprog` at prog.s:2:5: target 'tiny' cannot rewrite"):
        run_program(program, one_phase, fixed, {}, SimOptions())


# --- (c) time and energy ------------------------------------------------------------------

def _figures(group_rows: int, group_cols: int) -> tuple[int, int, int, int]:
    """(cells, bytes, transfer cycles, write cycles) of one tiny group, from the keys."""
    cells = group_rows * group_cols * TINY.slices
    nbytes = math.ceil(cells * TINY.cell_bits / 8)
    transfer = math.ceil(nbytes / TINY.weight_bytes_per_cycle)
    write = math.ceil(group_rows * TINY.latency.program_per_row)
    return cells, nbytes, transfer, write


def test_wprog_time_and_energy_follow_the_target_keys() -> None:
    cells, nbytes, transfer, write = _figures(16, 8)
    _, report = run(".core 0\n    wprog 0\n", phased_image())
    halt = TINY.latency.scalar
    assert report["cycles"] == transfer + write + halt
    assert report["programmed_cells"] == cells == 512
    assert report["programmed_bytes"] == nbytes == 128
    energy = TINY.energy
    assert report["energy_nj"]["program"] == pytest.approx(
        (cells * energy.program_per_cell + nbytes * energy.global_per_byte) / 1000)
    parts = sum(v for k, v in report["energy_nj"].items() if k != "total")
    assert report["energy_nj"]["total"] == pytest.approx(parts)
    assert report["bytes"]["global"] == 0  # the weight store is not the ld/st memory
    json.dumps(report)


def test_two_cores_wait_for_each_other_on_the_weight_channel_but_not_for_ld() -> None:
    image = phased_image()
    image.core(1, crossbars=4).add_group(0, W0, 8, TINY.cell_bits, SHARED, phase=1)
    source = """
.core 0
    wprog 0
.core 1
    wprog 0
.core 2
    ld 0(r0), 0(r0), 64
"""
    _, report = run(source, image)
    _, _, transfer, write = _figures(16, 8)
    halt = TINY.latency.scalar
    finish = {core["core"]: core["finish"] for core in report["cores"]}
    assert finish[0] == transfer + write + halt
    assert finish[1] == 2 * transfer + write + halt  # its bytes follow core 0's
    assert finish[2] == math.ceil(64 / TINY.global_bytes_per_cycle) + halt
    assert report["programmed_cells"] == 2 * 512


def test_wprog_waits_for_the_mvms_in_flight() -> None:
    _, _, transfer, write = _figures(16, 8)
    source = ".core 0\n    wprog 0\n    mvm.i8 0, 64(r0), 0(r0)\n    wprog 1\n"
    _, report = run(source, phased_image())
    first = transfer + write
    mvm_end = first + TINY.mvm_cycles  # the mvm starts when the first wprog is done
    assert report["cycles"] == mvm_end + transfer + write + TINY.latency.scalar


def test_instruction_cost_of_wprog_on_a_bundled_target() -> None:
    # edge: one 8-bit cell a weight, so a 100x30 group is 3000 bytes.
    edge = load_target("edge")
    image = Image(edge.cell_bits, edge.rows, edge.cols)
    group = image.core(0).add_group(0, np.ones((100, 30), dtype=int), 8, edge.cell_bits)
    cost = instruction_cost(BY_MNEMONIC["wprog"], (0,), edge, {0: group}, 0)
    transfer = math.ceil(3000 / edge.weight_bytes_per_cycle)
    write = math.ceil(100 * edge.latency.program_per_row)
    assert program_cycles(group, edge) == (transfer, write)
    assert cost.cycles == transfer + write
    assert cost.events == {"programmed_cells": 3000, "programmed_bytes": 3000}
    assert cost.crossbars == ()  # the core waits for it: not an MVM in flight


# --- (d) the image format with phases ------------------------------------------------------

def _header(content: bytes) -> dict:
    (length,) = struct.unpack_from("<I", content, len(MAGIC))
    return json.loads(content[len(MAGIC) + 4 : len(MAGIC) + 4 + length])


def test_phased_image_round_trips_byte_identically(tmp_path: Path) -> None:
    image = phased_image()
    assert image.phases == 2
    save_image(image, tmp_path / "a.img")
    content = (tmp_path / "a.img").read_bytes()
    assert content == phased_image().to_bytes()
    header = _header(content)
    assert header["phases"] == 2
    assert [g["phase"] for g in header["cores"][0]["groups"]] == [0, 1, 1]
    loaded = load_image(tmp_path / "a.img")
    assert loaded.to_bytes() == content
    core, again = image.cores[0], loaded.cores[0]
    assert again.groups == core.groups
    np.testing.assert_array_equal(again.cells, core.cells)
    for gid in core.groups:
        np.testing.assert_array_equal(again.group_digits(gid), core.group_digits(gid))
    # W0's digits are in the cell array, W1's (same cells) in its own store.
    assert not np.array_equal(core.group_digits(0), core.group_digits(1))
    assert again.overlapping(0) == (1,) and again.overlapping(1) == (0,)
    assert again.overlapping(2) == ()


def test_one_phase_image_has_no_phase_keys_and_is_unchanged_by_phase_zero() -> None:
    plain = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    plain.core(0, crossbars=4).add_group(0, W0, 8, TINY.cell_bits)
    plain.core(0).add_group(2, W2, 8, TINY.cell_bits)
    explicit = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    explicit.core(0, crossbars=4).add_group(0, W0, 8, TINY.cell_bits, phase=0)
    explicit.core(0).add_group(2, W2, 8, TINY.cell_bits, None, 0)
    content = plain.to_bytes()
    assert explicit.to_bytes() == content and plain.phases == 1
    header = _header(content)
    assert set(header) == {"cell_bits", "rows", "cols", "cores"}
    assert {key for g in header["cores"][0]["groups"] for key in g} == {
        "id", "weight_bits", "rows_used", "cols_used", "slices"}
    assert Image.from_bytes(content).to_bytes() == content


def test_groups_of_one_phase_may_not_share_cells_groups_of_two_may() -> None:
    image = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    core = image.core(0, crossbars=2)
    core.add_group(0, W0, 8, TINY.cell_bits, phase=1)
    with pytest.raises(ValueError, match="overlaps cells already in use in phase 1"):
        core.add_group(1, W1, 8, TINY.cell_bits, SHARED, phase=1)
    # first fit in phase 0 finds the cells phase 1 uses free
    group = core.add_group(1, W1, 8, TINY.cell_bits)
    assert group.slices == core.groups[0].slices and group.phase == 0
    with pytest.raises(ValueError, match="phase must be an integer >= 0"):
        core.add_group(3, W2, 8, TINY.cell_bits, phase=-1)
    assert sorted(core.groups) == [0, 1]


def _edited(content: bytes, edit: Any) -> bytes:
    header = _header(content)
    edit(header)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    (length,) = struct.unpack_from("<I", content, len(MAGIC))
    cells = content[len(MAGIC) + 4 + length :]
    return MAGIC + struct.pack("<I", len(text)) + text + cells


@pytest.mark.parametrize(("edit", "why"), [
    (lambda h: h.update(phases=3), "declares 3 phase"),
    (lambda h: h.pop("phases"), "has phase 1, outside 0..0"),
    (lambda h: h["cores"][0].update(groups=h["cores"][0]["groups"][:1]),
     "declares 2 phase"),
    (lambda h: h["cores"][0]["groups"][2].update(phase=-1), "phase -1, outside 0..1"),
    (lambda h: h["cores"][0]["groups"][1].update(phase=0), "overlaps cells of another"),
])
def test_loader_refuses_inconsistent_phases(edit: Any, why: str) -> None:
    with pytest.raises(CimcError, match=why):
        Image.from_bytes(_edited(phased_image().to_bytes(), edit), "p.img")


def test_loader_refuses_phases_written_for_one_phase() -> None:
    plain = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    plain.core(0, crossbars=4).add_group(0, W0, 8, TINY.cell_bits)
    with pytest.raises(CimcError, match='"phases" is 1; it is written only for more than one'):
        Image.from_bytes(_edited(plain.to_bytes(), lambda h: h.update(phases=1)), "p.img")


# --- (e) assembler, encoder, disassembler ---------------------------------------------------

def test_wprog_assembles_encodes_and_disassembles() -> None:
    program = assemble_text(".core 3\n    wprog 0\n    wprog 65535\n", "p.s")
    assert program.streams[3].instructions == [Instruction("wprog", (0,)),
                                               Instruction("wprog", (65535,))]
    word = encode_word(Instruction("wprog", (1234,)))
    assert word == BY_MNEMONIC["wprog"].opcode | 1234 << 8
    assert decode_word(word) == Instruction("wprog", (1234,))
    assert decode_program(encode_program(program)).streams == program.streams
    text = disassemble(program)
    assert "wprog 65535" in text
    assert assemble_text(text).streams == program.streams
    assert BY_MNEMONIC["wprog"].cost == "program"


def test_wprog_operand_out_of_range_is_an_assembler_error() -> None:
    with pytest.raises(CimcError, match="p.s:2"):
        assemble_text(".core 0\n    wprog 65536\n", "p.s")
    with pytest.raises(CimcError, match="p.s:2"):
        assemble_text(".core 0\n    wprog r1\n", "p.s")


# --- (f) target keys ------------------------------------------------------------------------

MINI = """\
description = "mini"
[chip]
mesh_x = 1
mesh_y = 1
cores_per_tile = 1
global_bytes_per_cycle = 6
[core]
crossbars_per_core = 1
[crossbar]
rows = 16
cols = 16
cell_bits = 2
"""


def test_reprogramming_keys_default_and_derive() -> None:
    t = parse_target(MINI, "mini.toml")
    assert t.reprogrammable is True
    assert t.weight_bytes_per_cycle == 6.0  # derived from global_bytes_per_cycle
    assert t.latency.program_per_row == 1000.0 and t.energy.program_per_cell == 10.0
    given = parse_target(MINI + "reprogrammable = false\n[latency]\nprogram_per_row = 2\n"
                         "[energy]\nprogram_per_cell = 0.5\n",
                         "mini.toml")
    assert given.reprogrammable is False and given.latency.program_per_row == 2.0
    assert given.energy.program_per_cell == 0.5
    assert isinstance(given.latency.program_per_row, float)


@pytest.mark.parametrize(("line", "message"), [
    ("reprogrammable = 1", "crossbar.reprogrammable: expected true or false, got integer 1"),
    ('reprogrammable = "yes"', 'expected true or false, got string "yes"'),
    ("weight_bytes_per_cycle = 0", "chip.weight_bytes_per_cycle: 0.0 is out of range; "
     "allowed: number 0.001..65536 bytes/cycle"),
    ("[latency]\nprogram_per_row = -1", "latency.program_per_row: -1.0 is out of range; "
     "allowed: number 0..10^9 cycles"),
    ('[energy]\nprogram_per_cell = "x"', 'energy.program_per_cell: expected number 0..10^9 '
     'pJ, got string "x"'),
])
def test_bad_reprogramming_keys_give_the_usual_message(line: str, message: str) -> None:
    if line.startswith("weight"):  # a [chip] key
        text = MINI.replace("[core]\n", line + "\n[core]\n")
    else:  # a [crossbar] key, or a section of its own
        text = MINI + line + "\n"
    with pytest.raises(TargetError, match=re.escape(message)) as error:
        parse_target(text, "mini.toml")
    assert error.value.problems[0].line == text.splitlines().index(line.splitlines()[-1]) + 1


def test_bundled_targets_price_reprogramming() -> None:
    for name in ("edge", "isaac", "puma", "pimcomp", "tiny"):
        t = load_target(name)
        assert t.reprogrammable
        assert t.latency.program_per_row > 0 and t.energy.program_per_cell > 0
        assert t.weight_bytes_per_cycle > 0
    # ~10 us a flash row at 100 MHz, ~1 us an RRAM row at ~1 GHz
    assert load_target("edge").latency.program_per_row / load_target("edge").clock_mhz == 10
    assert load_target("isaac").latency.program_per_row / load_target("isaac").clock_mhz == 1

