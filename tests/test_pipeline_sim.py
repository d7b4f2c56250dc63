"""The simulator's MVM timing: an mvm keeps its crossbars busy while the core goes on;
the instructions that need its result (or its crossbars) wait for it. Values stay exact."""

from __future__ import annotations

import numpy as np

from cimc.isa.assembler import assemble_text
from cimc.isa.image import Image
from cimc.isa.simulator import SimOptions, run_program
from cimc.targets import load_target

TINY = load_target("tiny")
MVM = 8 * TINY.latency.mvm  # 8 input bits, a 1-bit DAC
RNG = np.random.default_rng(7)
W0 = RNG.integers(-128, 128, size=(16, 4))  # 4 columns x 4 slices: one 16x16 crossbar
W1 = RNG.integers(-128, 128, size=(16, 4))
X = RNG.integers(-128, 128, size=(3, 16)).astype(np.int8)


def run(body: str, cores: str = "") -> tuple[dict[str, np.ndarray], dict]:
    image = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    core = image.core(0, crossbars=TINY.crossbars_per_core)
    core.add_group(0, W0, 8, TINY.cell_bits)
    core.add_group(1, W1, 8, TINY.cell_bits)
    source = f""".target tiny
.input "x", 0, i8, [16], 1.0, 0
.output "y", 64, i32, [8], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
{body}
    st 64(r0), 128(r0), 32
{cores}"""
    return run_program(assemble_text(source, "prog.s"), image, TINY, {"x": X}, SimOptions())


def test_mvms_on_different_crossbars_overlap_and_stay_exact() -> None:
    outputs, report = run("""
    mvm.i8 0, 128(r0), 0(r0)
    mvm.i8 1, 144(r0), 0(r0)""")
    np.testing.assert_array_equal(outputs["y"], np.concatenate([X @ W0, X @ W1], axis=1))
    assert MVM < report["cycles"] < MVM + 20  # one MVM time, not two


def test_mvms_on_one_group_wait_for_its_crossbars() -> None:
    outputs, report = run("""
    mvm.i8 0, 128(r0), 0(r0)
    mvm.acc.i8 0, 128(r0), 0(r0)""")
    np.testing.assert_array_equal(outputs["y"][:, :4], 2 * (X @ W0))
    assert 2 * MVM < report["cycles"] < 2 * MVM + 20


def test_accumulating_into_a_result_in_flight_does_not_wait_for_it() -> None:
    outputs, report = run("""
    mvm.i8 0, 128(r0), 0(r0)
    mvm.acc.i8 1, 128(r0), 0(r0)""")
    np.testing.assert_array_equal(outputs["y"][:, :4], X @ W0 + X @ W1)
    assert report["cycles"] < MVM + 20


def test_reading_a_result_waits_but_other_work_overlaps() -> None:
    work = "\n".join(["    vaddi.i32 512(r0), 512(r0), 1, 64"] * 4)  # 4 x 16 cycles
    _, overlapped = run(f"""
    mvm.i8 0, 128(r0), 0(r0)
{work}""")
    _, waiting = run(f"""
    mvm.i8 0, 128(r0), 0(r0)
    vaddi.i32 128(r0), 128(r0), 0, 4
{work}""")
    assert overlapped["cycles"] < MVM + 20
    assert waiting["cycles"] > MVM + 64


def test_a_message_of_a_result_leaves_after_the_mvm() -> None:
    _, report = run("""
    mvm.i8 0, 128(r0), 0(r0)
    send 1, 128(r0), 16, 0""", cores="""
.core 1
    recv 0, 0(r0), 16, 0
""")
    finish = {c["core"]: c["finish"] for c in report["cores"]}
    assert finish[1] > MVM
    assert report["crossbar_utilization"] > 0
