"""Assembly programs run on the simulator give exactly the numpy result, in sensible time."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest

from cimc.diagnostics import CimcError
from cimc.isa.assembler import assemble_text
from cimc.isa.image import Image
from cimc.isa.simulator import SimOptions, run_float, run_program, simulate
from cimc.isa.simulator.crossbar import Analog
from cimc.isa.simulator.machine import Machine
from cimc.reference import requant
from cimc.targets import load_target

TINY = load_target("tiny")


def run(source: str, inputs: dict[str, np.ndarray] | None = None, image: Image | None = None,
        **options: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    program = assemble_text(source, "prog.s")
    return run_program(program, image, TINY, inputs or {}, SimOptions(**options))


def words(rows: np.ndarray) -> str:
    return "\n".join(".word " + ", ".join(str(int(v)) for v in row) for row in rows)


def weights_image(w: np.ndarray, core: int = 0, group: int = 0) -> Image:
    image = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    image.core(core, crossbars=TINY.crossbars_per_core).add_group(group, w, 8, TINY.cell_bits)
    return image


RNG = np.random.default_rng(2024)
W = RNG.integers(-128, 128, size=(16, 8))
X = RNG.integers(-128, 128, size=(50, 16)).astype(np.int8)


@pytest.mark.parametrize("bit_level", [False, True], ids=["exact", "bit-level"])
def test_mvm_then_per_channel_requantize_equals_numpy(bit_level: bool) -> None:
    mult, shift = requant.fixed_point(RNG.uniform(0.001, 0.02, size=8))
    zp, lo, hi = -3, -100, 127
    table = np.stack([mult, shift, [zp] * 8, [lo] * 8, [hi] * 8], axis=1)
    source = f"""
.input x, 0, i8, [16], 0.05, 0
.output y, 0x100, i8, [8], 0.1, -3
.core 0
.data 0x800
{words(table)}
    ld 0(r0), 0(r0), 16
    mvm.i8 0, 64(r0), 0(r0)
    requant.i8 128(r0), 64(r0), 8, 0x800(r0)
    st 0x100(r0), 128(r0), 8
    halt
"""
    outputs, report = run(source, {"x": X}, weights_image(W), bit_level=bit_level)
    acc = X.astype(np.int64) @ W
    expected = np.clip(requant.saturate(requant.apply(acc, mult, shift) + zp, np.int8), lo, hi)
    np.testing.assert_array_equal(outputs["y"], expected)
    assert outputs["y"].dtype == np.int8
    assert report["mvm_instructions"] == 1
    # 16x8 weights on 2-bit cells take 4 column slices of 8 -> two 16-column crossbars
    assert report["crossbar_activations"] == 2
    assert report["adc_conversions"] == 8 * 4 * 8  # steps x slices x columns


def test_activation_by_lookup_table_and_clamp() -> None:
    lut = np.array([min(127, max(-128, round(60 * math.tanh((b - 256 * (b > 127)) / 40))))
                    for b in range(256)])
    source = f"""
.input x, 0, i8, [32], 0.1, 0
.output t, 64, i8, [32], 0.1, 0
.output c, 128, i8, [32], 0.1, 0
.core 0
.data 0x400
.byte {", ".join(map(str, lut))}
    ld 0(r0), 0(r0), 32
    vlut.i8 64(r0), 0(r0), 32, 0x400(r0)
    vmaxi.i8 128(r0), 0(r0), -20, 32
    vmini.i8 128(r0), 128(r0), 90, 32
    st 64(r0), 64(r0), 32
    st 128(r0), 128(r0), 32
"""
    x = RNG.integers(-128, 128, size=(40, 32)).astype(np.int8)
    outputs, _ = run(source, {"x": x})
    np.testing.assert_array_equal(outputs["t"], lut[x.view(np.uint8)])
    np.testing.assert_array_equal(outputs["c"], np.clip(x, -20, 90))


def test_max_and_sum_pooling_with_reductions() -> None:
    # 2x2 pooling, stride 2, of a [4, 4, 2] NHWC u8 image: rows pooled, then row pairs.
    lines = []
    for y in range(4):
        for ox in range(2):
            src, dst = y * 8 + ox * 4, 64 + y * 4 + ox * 2
            lines.append(f"vredmax.u8 {dst}(r0), {src}(r0), 2, 2, 2")
            lines.append(f"vredsum.u8 {4 * dst}(r0), {src}(r0), 2, 2, 2")
    for oy in range(2):
        lines.append(f"vredmax.u8 {128 + oy * 4}(r0), {64 + oy * 8}(r0), 4, 2, 4")
        lines.append(f"vredsum.i32 {1024 + oy * 16}(r0), {256 + oy * 32}(r0), 4, 2, 4")
    body = "\n    ".join(lines)
    source = f"""
.input x, 0, u8, [4, 4, 2], 1.0, 0
.output m, 0x100, u8, [2, 2, 2], 1.0, 0
.output s, 0x200, i32, [2, 2, 2], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 32
    {body}
    st 0x100(r0), 128(r0), 8
    st 0x200(r0), 1024(r0), 32
"""
    x = RNG.integers(0, 256, size=(30, 4, 4, 2)).astype(np.uint8)
    outputs, _ = run(source, {"x": x})
    windows = x.reshape(30, 2, 2, 2, 2, 2).astype(np.int64)  # b, oy, dy, ox, dx, c
    np.testing.assert_array_equal(outputs["m"], windows.max(axis=(2, 4)))
    np.testing.assert_array_equal(outputs["s"], windows.sum(axis=(2, 4)))


def test_vector_arithmetic_saturates_i8_u8_and_wraps_i32() -> None:
    source = """
.input a, 0, i8, [8], 1.0, 0
.input b, 8, i8, [8], 1.0, 0
.output add, 0x100, i8, [8], 1.0, 0
.output sub, 0x108, u8, [8], 1.0, 0
.output shr, 0x110, i8, [8], 1.0, 0
.output scale, 0x120, i32, [8], 1.0, 0
.output mul, 0x140, i32, [8], 1.0, 0
.output wrapped, 0x160, i32, [32], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    vadd.i8 32(r0), 0(r0), 8(r0), 8
    vsub.u8 40(r0), 0(r0), 8(r0), 8
    vshr.i8 48(r0), 0(r0), 2, 8
    vscale.i8 64(r0), 0(r0), 8, -5, 1000
    vmul.i32 96(r0), 64(r0), 64(r0), 8
    st 0x100(r0), 32(r0), 24
    vadd.i32 128(r0), 96(r0), 96(r0), 8
    vsub.i32 160(r0), 128(r0), 96(r0), 8
    vmax.i32 192(r0), 96(r0), 64(r0), 8
    vmul.i32 224(r0), 128(r0), 64(r0), 8
    st 0x120(r0), 64(r0), 64
    st 0x160(r0), 128(r0), 128
"""
    a = RNG.integers(-128, 128, size=(20, 8)).astype(np.int8)
    b = RNG.integers(-128, 128, size=(20, 8)).astype(np.int8)
    out, _ = run(source, {"a": a, "b": b})
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    np.testing.assert_array_equal(out["add"], np.clip(a64 + b64, -128, 127))
    ua, ub = a.view(np.uint8).astype(np.int64), b.view(np.uint8).astype(np.int64)
    np.testing.assert_array_equal(out["sub"], np.clip(ua - ub, 0, 255))
    np.testing.assert_array_equal(out["shr"], a64 >> 2)
    scaled = (a64 + 5) * 1000
    np.testing.assert_array_equal(out["scale"], scaled)
    product = (scaled * scaled).astype(np.int32)  # wraps
    np.testing.assert_array_equal(out["mul"], product)
    doubled = (2 * product.astype(np.int64)).astype(np.int32)  # wraps again
    wide = doubled.astype(np.int64)
    wrapped = out["wrapped"].reshape(20, 4, 8)
    np.testing.assert_array_equal(wrapped[:, 0], doubled)
    np.testing.assert_array_equal(wrapped[:, 1], (wide - product).astype(np.int32))
    np.testing.assert_array_equal(wrapped[:, 2], np.maximum(product, scaled))
    np.testing.assert_array_equal(wrapped[:, 3], (wide * scaled).astype(np.int32))


def test_strided_copy_gathers_a_window_and_fill_pads() -> None:
    source = """
.input x, 0, u8, [6, 6], 1.0, 0
.output w, 0x100, u8, [4, 5], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 36
    fill 64(r0), 7, 20
    copy 64(r0), 7(r0), 3, 3, 5, 6
    st 0x100(r0), 64(r0), 20
"""
    x = RNG.integers(0, 256, size=(10, 6, 6)).astype(np.uint8)
    out, _ = run(source, {"x": x})
    expected = np.full((10, 4, 5), 7, dtype=np.uint8)
    expected[:, :3, :3] = x[:, 1:4, 1:4]
    np.testing.assert_array_equal(out["w"], expected)


def test_loop_over_pixels_with_mvm_accumulate() -> None:
    # y[p] = x[p] . W + x[p] . W2 for 6 pixels, one loop iteration per pixel.
    w2 = RNG.integers(-128, 128, size=(16, 8))
    image = weights_image(W)
    image.core(0).add_group(1, w2, 8, TINY.cell_bits)
    source = """
.input x, 0, u8, [6, 16], 1.0, 0
.output y, 0x200, i32, [6, 8], 1.0, 0
.core 0
    li r1, 0            # input offset
    li r2, 0x200        # output address
    li r3, 96           # end
loop:
    ld 0(r0), 0(r1), 16
    mvm.u8 0, 64(r0), 0(r0)
    mvm.acc.u8 1, 64(r0), 0(r0)
    st 0(r2), 64(r0), 32
    addi r1, r1, 16
    addi r2, r2, 32
    blt r1, r3, loop
    halt
"""
    x = RNG.integers(0, 256, size=(25, 6, 16)).astype(np.uint8)
    out, report = run(source, {"x": x}, image)
    np.testing.assert_array_equal(out["y"], x.astype(np.int64) @ (W + w2))
    assert report["mvm_instructions"] == 12
    assert report["instructions"] == 3 + 6 * 7 + 1


def test_send_and_receive_between_cores_on_different_tiles() -> None:
    source = """
.input x, 0, i8, [16], 1.0, 0
.output y, 64, i8, [16], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    send 6, 0(r0), 16, 3
    halt
.core 6
    recv 0, 100(r0), 16, 3
    vaddi.i8 200(r0), 100(r0), 100, 16
    st 64(r0), 200(r0), 16
    halt
"""
    out, report = run(source, {"x": X})
    np.testing.assert_array_equal(out["y"], np.clip(X.astype(np.int64) + 100, -128, 127))
    assert TINY.hops(0, 6) == 2
    assert report["bytes"]["network"] == 16 and report["hop_bytes"] == 32


def _message_cycles(dest: int, nbytes: int = 64) -> int:
    source = f"""
.core 0
    send {dest}, 0(r0), {nbytes}, 1
.core {dest}
    recv 0, 0(r0), {nbytes}, 1
"""
    return run(source)[1]["cycles"]


def test_a_message_over_more_hops_takes_longer_by_the_hop_latency() -> None:
    lat = TINY.latency
    serial = math.ceil(64 / TINY.link_bytes_per_cycle)
    near, far = _message_cycles(1), _message_cycles(6)
    # send setup, hops, serialization, recv setup, then the implicit halt
    assert near == lat.send_setup + serial + lat.recv_setup + lat.scalar
    assert far - near == 2 * TINY.hop_latency


def test_messages_sharing_a_link_serialize() -> None:
    source = """
.core 0
    send 2, 0(r0), 64, 1
.core 1
    send 2, 0(r0), 64, 1
.core 2
    recv 0, 0(r0), 64, 1
    recv 1, 64(r0), 64, 1
"""
    shared = run(source)[1]["cycles"]
    alone = _message_cycles(2)
    serial = math.ceil(64 / TINY.link_bytes_per_cycle)
    # The second message waits for the first to clear the link from tile 0 to tile 1.
    assert shared == alone + serial


def _mvm_loop(cores: list[int], count: int) -> int:
    image = Image(TINY.cell_bits, TINY.rows, TINY.cols)
    sections = []
    for core in cores:
        image.core(core, crossbars=4).add_group(0, W, 8, TINY.cell_bits)
        sections.append(f"""
.core {core}
    li r1, {count}
loop:
    mvm.i8 0, 64(r0), 0(r0)
    addi r1, r1, -1
    bne r1, r0, loop
""")
    return run("".join(sections), image=image)[1]["cycles"]


def test_cores_run_in_parallel_so_time_is_the_max_not_the_sum() -> None:
    one = _mvm_loop([0], 10)
    assert _mvm_loop([0, 5], 10) == one
    assert _mvm_loop([0], 20) > 1.9 * one


def test_sync_is_a_barrier_at_the_latest_arrival() -> None:
    source = """
.core 0
    li r1, 100
loop:
    addi r1, r1, -1
    bne r1, r0, loop
    sync
.core 1
    sync
"""
    report = run(source)[1]
    finishes = [c["finish"] for c in report["cores"]]
    assert finishes[0] == finishes[1] > 200
    assert report["cores"][1]["busy"] < 5


def test_deadlock_names_each_blocked_core_and_instruction() -> None:
    source = """
.core 0
    recv 1, 0(r0), 4, 7
    send 1, 0(r0), 4, 8
.core 3
    li r1, 1
    recv 0, 0(r0), 4, 8
"""
    with pytest.raises(CimcError) as info:
        run(source)
    message = str(info.value)
    assert "deadlock" in message
    assert "core 0 waits at `recv` at prog.s:3" in message
    assert "from core 1 with tag 7" in message
    assert "core 3 waits at `recv` at prog.s:7" in message


def test_send_without_a_matching_recv_is_an_error_naming_the_send() -> None:
    source = """
.input x, 0, i8, [4], 0.1, 0
.output y, 0x40, i8, [4], 0.1, 0
.core 0
    ld 0(r0), 0(r0), 4
    send 1, 0(r0), 4, 5
    send 2, 0(r0), 4, 6
.core 1
    recv 0, 0(r0), 4, 5
    st 0x40(r0), 0(r0), 4
"""
    x = np.arange(8, dtype=np.int8).reshape(2, 4)
    with pytest.raises(CimcError, match=r"messages were sent and never received.*"
                                        r"core 0 -> core 2 tag 6: 1 message\(s\), the first "
                                        r"sent by `send` at prog.s:7"):
        run(source, {"x": x})
    matched = source.replace("    send 2, 0(r0), 4, 6\n", "")
    np.testing.assert_array_equal(run(matched, {"x": x})[0]["y"], x)


def test_send_to_a_core_that_never_receives_is_an_error() -> None:
    source = ".core 0\n    send 1, 0(r0), 4, 1\n.core 1\n    halt\n"
    with pytest.raises(CimcError, match=r"core 0 -> core 1 tag 1.*prog.s:2"):
        run(source)


def test_sync_with_a_halted_core_is_a_deadlock() -> None:
    expected = r"core 0 waits at `sync` at prog.s:3:5 for cores 1 \(halted\)"
    with pytest.raises(CimcError, match=expected):
        run(".core 0\n\n    sync\n.core 1\n    halt\n")


def test_runaway_loop_stops_at_the_step_limit() -> None:
    with pytest.raises(CimcError, match="step limit of 1000 instructions"):
        run(".core 0\nspin: jmp spin\n", max_steps=1000)


def test_out_of_range_access_names_core_and_line() -> None:
    with pytest.raises(CimcError, match=r"core 0: `ld` at prog.s:4.*outside"):
        run(".core 0\n    li r1, 16380\n\n    ld 0(r1), 0(r0), 8\n")


def test_mismatched_message_length_is_an_error() -> None:
    source = ".core 0\n    send 1, 0(r0), 8, 1\n.core 1\n    recv 0, 0(r0), 4, 1\n"
    with pytest.raises(CimcError, match="receives 4 bytes but core 0 sent 8"):
        run(source)


def test_mvm_on_a_group_missing_from_the_image_is_an_error() -> None:
    with pytest.raises(CimcError, match="group 2 is not in the image for core 0"):
        run(".core 0\n    mvm.i8 2, 0(r0), 0(r0)\n", image=weights_image(W))


def test_energy_is_events_times_the_target_table() -> None:
    source = """
.input x, 0, i8, [16], 1.0, 0
.output y, 64, i32, [8], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    mvm.i8 0, 32(r0), 0(r0)
    st 64(r0), 32(r0), 32
"""
    _, report = run(source, {"x": X}, weights_image(W))
    energy, steps = TINY.energy, TINY.input_steps
    assert report["energy_nj"]["global"] == pytest.approx(48 * energy.global_per_byte / 1000)
    assert report["energy_nj"]["mvm"] == pytest.approx(
        steps * 2 * energy.mvm_per_crossbar_step / 1000)
    assert report["energy_nj"]["adc"] == pytest.approx(256 * energy.adc_per_conversion / 1000)
    parts = sum(v for k, v in report["energy_nj"].items() if k != "total")
    assert report["energy_nj"]["total"] == pytest.approx(parts)
    assert report["cycles"] == report["cores"][0]["finish"]
    assert report["throughput_per_s"] == pytest.approx(TINY.clock_mhz * 1e6 / report["cycles"])
    assert 0 < report["crossbar_utilization"] < 1
    json.dumps(report)


def test_float_inputs_are_quantized_and_outputs_dequantized() -> None:
    source = """
.input x, 0, u8, [4], 0.5, 10
.output y, 16, u8, [4], 0.25, 2
.core 0
    ld 0(r0), 0(r0), 4
    st 16(r0), 0(r0), 4
"""
    program = assemble_text(source)
    values = np.array([[0.0, 1.0, 1.25, 200.0]], dtype=np.float32)
    out, _ = run_float(program, None, TINY, {"x": values})
    codes = np.clip(np.rint(values / 0.5) + 10, 0, 255)  # 1.25/0.5 = 2.5 rounds to 2
    np.testing.assert_allclose(out["y"], 0.25 * (codes - 2))


def test_trace_has_a_track_per_core_and_stays_bounded() -> None:
    source = """
.core 0
    li r1, 5000
loop:
    addi r1, r1, -1
    bne r1, r0, loop
    send 1, 0(r0), 4, 1
.core 1
    recv 0, 0(r0), 4, 1
"""
    program = assemble_text(source, "prog.s")
    result = simulate(program, None, TINY, {}, SimOptions(trace=True, trace_detail=100))
    assert result.trace is not None
    document = json.loads(result.trace.to_json())
    events = [e for e in document["traceEvents"] if e["ph"] == "X"]
    assert {e["tid"] for e in events} == {0, 1}
    assert len(events) < 200
    loop = [e for e in events if e["name"].startswith("loop")]
    assert loop and loop[0]["args"]["iterations"] > 4000
    recv = next(e for e in events if e["name"] == "recv")
    assert recv["dur"] * TINY.clock_mhz > 10000  # core 1 waited for the loop


def test_link_bookings_follow_time_not_core_numbers() -> None:
    late_sender = """
.core 0
    li r1, 50
loop:
    addi r1, r1, -1
    bne r1, r0, loop
    send 2, 0(r0), 64, 1
"""
    alone = run(late_sender + ".core 2\n    recv 0, 0(r0), 64, 1\n")[1]["cycles"]
    # Core 1's early message uses the same link long before core 0's: no delay for core 0.
    both = run(late_sender + """
.core 1
    send 2, 0(r0), 64, 1
.core 2
    recv 1, 64(r0), 64, 1
    recv 0, 0(r0), 64, 1
""")[1]["cycles"]
    assert both == alone  # core 2 took the early message long before the late one came


def test_every_instruction_of_the_table_has_semantics() -> None:
    from cimc.isa.simulator.registry import check_registry

    assert check_registry() == []


def test_overlapping_copy_across_a_page_boundary_reads_the_old_bytes() -> None:
    source = """
.input x, 4000, u8, [200], 1.0, 0
.output y, 8000, u8, [200], 1.0, 0
.core 0
    ld 3800(r0), 4000(r0), 200
    copy 3900(r0), 3800(r0), 200, 1, 0, 0
    st 8000(r0), 3900(r0), 200
"""
    x = RNG.integers(0, 256, size=(3, 200)).astype(np.uint8)
    np.testing.assert_array_equal(run(source, {"x": x})[0]["y"], x)


@pytest.mark.parametrize("bit_level", [False, True], ids=["exact", "bit-level"])
def test_edge_target_mvm_on_multi_level_cells_with_uint8_inputs(bit_level: bool) -> None:
    edge = load_target("edge")
    w = RNG.integers(-128, 128, size=(1024, 40))
    image = Image(edge.cell_bits, edge.rows, edge.cols)
    image.core(0).add_group(0, w, 8, edge.cell_bits)
    program = assemble_text("""
.input x, 0, u8, [1024], 1.0, 0
.output y, 4096, i32, [40], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 1024
    mvm.u8 0, 2048(r0), 0(r0)
    st 4096(r0), 2048(r0), 160
""")
    x = RNG.integers(0, 256, size=(8, 1024)).astype(np.uint8)
    outputs, report = run_program(program, image, edge, {"x": x}, SimOptions(bit_level=bit_level))
    np.testing.assert_array_equal(outputs["y"], x.astype(np.int64) @ w)
    assert report["adc_conversions"] == 40  # one 8-bit step, one slice per weight


def test_cores_hand_over_through_global_memory_after_a_sync() -> None:
    source = """
.input x, 0, i8, [16], 1.0, 0
.output y, 64, i8, [16], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    vaddi.i8 0(r0), 0(r0), 5, 16
    st 32(r0), 0(r0), 16
    sync
.core 7
    sync
    ld 0(r0), 32(r0), 16
    vmaxi.i8 0(r0), 0(r0), 0, 16
    st 64(r0), 0(r0), 16
"""
    out, _ = run(source, {"x": X})
    np.testing.assert_array_equal(out["y"], np.clip(X.astype(np.int64) + 5, 0, 127))


def test_a_core_with_only_data_takes_no_part_in_sync() -> None:
    _, report = run(".core 0\n    sync\n.core 3\n.data 0\n.byte 1\n")
    assert report["cores"][0]["finish"] == 2 * TINY.latency.scalar


MVM_ONE = """
.input x, 0, i8, [16], 1.0, 0
.output y, 0x100, i32, [8], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 16
    mvm.i8 0, 64(r0), 0(r0)
    st 0x100(r0), 64(r0), 32
"""


@pytest.mark.parametrize("noise", [0.0, 0.25])
@pytest.mark.parametrize("largest", [15, 16])
def test_an_adc_that_cannot_clip_takes_the_exact_path_and_one_bit_less_does_not(
        largest: int, noise: float) -> None:
    """The exact shortcut for an ADC what-if holds at the limit (the largest partial sum
    is 2^adc - 1, or 2^adc with a bit more) and is refused one bit below it, where
    clipping changes the result, and under noise (whose sums the ADC rounds)."""
    # Offset binary on 2-bit cells: w + 128 = 192 stores level 3 in the top slice, 64
    # level 1. Column 0 sums `largest` levels in its top slice; the others store 0 or 1
    # in their bottom slice, at most 15 in all.
    w = RNG.integers(-128, -126, size=(16, 8))
    w[0] = -128
    w[:, 0] = -128
    w[: largest // 3, 0] = 64
    w[largest // 3 : largest // 3 + largest % 3, 0] = -64
    image = weights_image(w)
    core = image.cores[0]
    assert core.groups[0].digits(core.cells).sum(axis=1).max() == largest
    fits = largest.bit_length()  # the fewest ADC bits holding `largest` (1-bit DAC)
    x = RNG.integers(-128, 128, size=(40, 16)).astype(np.int8)
    x[0] = -1  # every digit 1 (the sign step -1): the largest partial sums
    program = assemble_text(MVM_ONE, "prog.s")
    for adc_bits in (fits, fits - 1):
        options = SimOptions(adc_bits=adc_bits, noise_sigma=noise)
        machine = Machine(program, image, TINY, 40, Analog(adc_bits, noise), False)
        assert machine.cores[0].groups[0].exact == (adc_bits == fits and noise == 0)
        modelled = simulate(program, image, TINY, {"x": x},
                            dataclasses.replace(options, bit_level=True)).outputs["y"]
        out = simulate(program, image, TINY, {"x": x}, options).outputs["y"]
        np.testing.assert_array_equal(out, modelled)
        if noise == 0:
            assert np.array_equal(out, x.astype(np.int64) @ w) == (adc_bits == fits)
