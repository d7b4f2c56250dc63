"""The schedule bounds are lower bounds (simulated runs never beat them), the
per-core Jackson bound on hand-made cases, and a core's partial window gather
copying exactly the window rows its blocks read."""

from __future__ import annotations

import re
from pathlib import Path

import backend_models
import models
import numpy as np
import pytest

import cimc
from cimc.analysis.bounds import jackson
from cimc.analysis.window import Window, band_plan, transient
from cimc.emit.report import schedule_bounds
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image
from cimc.isa.simulator import run_program
from cimc.targets import Target


def testjackson_preempts_for_the_longer_tail() -> None:
    # (release, duration, tail): the second job arrives at 1 and preempts the first.
    assert jackson([(0.0, 10.0, 0.0), (1.0, 2.0, 100.0)]) == 103.0
    # No tails: the core's work after its first release, gaps included.
    assert jackson([(0.0, 5.0, 0.0), (20.0, 5.0, 0.0), (21.0, 1.0, 0.0)]) == 26.0
    assert jackson([]) == 0.0


def _cycles(prog: Path, target: Target) -> int:
    program = assemble_file(prog)
    inputs = {p.name: np.full((1, *p.shape), p.zp, dtype=np.int8 if p.dtype == "i8"
                              else np.uint8) for p in program.inputs}
    _, report = run_program(program, load_image(prog.with_suffix(".img")), target, inputs)
    return int(report["cycles"])


@pytest.mark.parametrize(("model", "target"), [
    (lambda: backend_models.quantized_model("mnist_tiny"), "tiny"),
    (lambda: models.quantized_model("separable"), "pimcomp"),
])
def test_simulated_runs_never_beat_the_bounds(model, target: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = str(model())
    effort = 0.1  # a quick placement search: any placement has its bounds
    lat = cimc.compile(path, target, place_effort=effort)
    lat.save(tmp_path / "lat.s")
    bounds = schedule_bounds(lat.module, lat.target)
    assert _cycles(tmp_path / "lat.s", lat.target) >= bounds["latency_bound_cycles"] > 0
    one = cimc.compile(path, target, pipeline="throughput", stream=1, place_effort=effort)
    one.save(tmp_path / "t1.s")
    three = cimc.compile(path, target, pipeline="throughput", stream=3, place_effort=effort)
    three.save(tmp_path / "t3.s")
    period = (_cycles(tmp_path / "t3.s", three.target)
              - _cycles(tmp_path / "t1.s", one.target)) / 2
    assert period >= schedule_bounds(one.module, one.target)["period_bound_cycles"] > 0


def _run_copies(lines: list[str], band: np.ndarray, size: int) -> np.ndarray:
    """The window buffer after the gather's `copy dst(r0), src(r2), len, reps, dst_stride,
    src_stride` lines (r2 = 0 in `band`); untouched bytes stay -1."""
    out = np.full(size, -1, dtype=np.int64)
    for line in lines:
        dst, src, length, reps, ds, ss = map(int, re.findall(r"-?\d+", line.replace("r0", "")
                                                              .replace("r2", "")))
        for r in range(reps):
            out[dst + r * ds:dst + r * ds + length] = band[src + r * ss:src + r * ss + length]
    return out


@pytest.mark.parametrize("geometry", [
    dict(c=48, groups=48, kw=3, dw=1),  # depthwise
    dict(c=32, groups=4, kw=3, dw=1),  # grouped
    dict(c=40, groups=1, kw=3, dw=1),  # dense: kernel rows contiguous in the band
    dict(c=16, groups=1, kw=3, dw=2),  # dense, dilated
])
@pytest.mark.parametrize("rows", [(0, 50), (37, 200), (128, 256), (300, 301)])
def test_partial_gather_copies_the_rows_a_core_reads(geometry: dict[str, int],
                                                     rows: tuple[int, int]) -> None:
    c, groups, kw, dw = geometry["c"], geometry["groups"], geometry["kw"], geometry["dw"]
    win = Window(h=8, w=8, c=c, oh=8, ow=8, n=c, kh=3, kw=kw, sh=1, sw=1, dh=dw, dw=dw,
                 pt=1, pl=1, pb=1, pr=1, groups=groups)
    lo, hi = rows[0], min(rows[1], win.window_bytes)
    band = np.arange(win.band_bytes * 2)
    full = _run_copies(win.gather(0), band, win.window_bytes)
    part = _run_copies(win.gather(0, (lo, hi)), band, win.window_bytes)
    assert (full >= 0).all()
    np.testing.assert_array_equal(part[lo:hi], full[lo:hi])
    copied = sum(int(re.findall(r"\d+", ln)[-4]) * int(re.findall(r"\d+", ln)[-3])
                 for ln in win.gather(0, (lo, hi)))
    assert copied == win.gathered_bytes((lo, hi)) <= win.gathered_bytes()


@pytest.mark.parametrize(("pads", "kh", "sh", "rows", "fresh"), [
    ((0, 0, 0, 0), 1, 1, [0], True),  # a gemm's one row
    ((0, 0, 0, 0), 1, 1, [0, 1, 2], True),  # 1x1: every row received afresh
    ((0, 0, 0, 0), 2, 2, [0, 1, 2], True),  # stride = kernel: no row shared
    ((1, 0, 1, 0), 3, 3, [0, 1, 2], True),  # padding rows are filled every row
    ((0, 0, 0, 0), 3, 1, [0, 1, 2], False),  # consecutive rows share two band rows
    ((0, 1, 0, 1), 1, 1, [0], False),  # padding columns are filled once
    ((0, 0, 0, 0), 3, 1, [0, 3], True),  # a core's rows three apart share none
    ((0, 0, 0, 0), 3, 1, [0, 2], False),  # two apart: one band row kept
])
def test_a_band_refreshed_whole_every_row_is_transient(
        pads: tuple[int, int, int, int], kh: int, sh: int, rows: list[int],
        fresh: bool) -> None:
    """A band that carries nothing from one output row to the next (no padding columns,
    no band rows kept) can be scratch; the others live for the run."""
    pt, pl, pb, pr = pads
    win = Window(h=9, w=4, c=8, oh=3, ow=4, n=8, kh=kh, kw=1, sh=sh, sw=1, dh=1, dw=1,
                 pt=pt, pl=pl, pb=pb, pr=pr)
    steps = band_plan(win, rows)
    assert transient(win, steps) is fresh
