"""The partition pass and the phase model (cimc/analysis/phases.py): one phase for a model
that fits (module unchanged), phases that each fit, the dynamic programme equal to an
exhaustive search over the cut points, greedy as its baseline, clear refusals."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from cimc.analysis.phases import PhaseModel, PhasePlan, layers_of, partition
from cimc.diagnostics import CimcError
from cimc.ir.module import Module
from cimc.ir.text import parse_module, print_module
from cimc.pass_manager import parse_pipeline, run_pipeline
from cimc.targets import load_target


def chain(widths: list[int], seed: int = 0) -> str:
    """A quantized MLP: gemms of the given widths one after another (the first reads
    an input of widths[0] features), as .cir text."""
    rng = np.random.default_rng(seed)
    lines = ["module @chain {", f"  input %x : f32[1,{widths[0]}]"]
    for k, (cin, cout) in enumerate(itertools.pairwise(widths)):
        data = ", ".join(str(v) for v in rng.integers(-127, 128, size=cout * cin))
        lines.append(f"  const %w{k} : i8[{cout},{cin}] q<scale=0.01, zp=0> = [{data}]")
    lines.append(f"  %h = quantize(%x) : i8[1,{widths[0]}] q<scale=0.05, zp=0>")
    previous = "%h"
    for k, cout in enumerate(widths[1:]):
        lines.append(f"  %fc{k} = gemm({previous}, %w{k}) : i8[1,{cout}] q<scale=0.1, zp=0>")
        previous = f"%fc{k}"
    lines += [f"  %y = dequantize({previous}) : f32[1,{widths[-1]}]", "  output %y", "}"]
    return "\n".join(lines)


def tiled(text: str, target: str = "tiny") -> Module:
    module = parse_module(text)
    run_pipeline(module, parse_pipeline("lower,tile", load_target(target)))
    return module


def test_a_model_that_fits_is_one_phase_and_unchanged() -> None:
    module = tiled(chain([16, 16, 16, 16]))
    before = print_module(module)
    run_pipeline(module, parse_pipeline("partition", load_target("tiny")))
    assert print_module(module) == before
    plan = partition(module, load_target("tiny"))
    assert len(plan.phases) == 1 and plan.phases[0].layers == ("fc0", "fc1", "fc2")


def test_phases_fit_cover_the_order_and_are_written_on_the_ops() -> None:
    # tiny: 32 crossbars of 16 cell columns; a 16x16 block of 8-bit weights in 2-bit
    # cells takes 64 columns, so at most 8 such blocks per phase.
    widths = [16, 32, 16, 32, 16, 32, 16, 16, 16]
    module = tiled(chain(widths))
    target = load_target("tiny")
    for method in ("greedy", "optimal"):
        plan = partition(module, target, method)
        assert len(plan.phases) > 1
        assert [layer for p in plan.phases for layer in p.layers] == \
            [f"fc{k}" for k in range(len(widths) - 1)]
        assert all(p.columns <= target.total_crossbars * target.cols for p in plan.phases)
    passes = parse_pipeline("partition{method=greedy}", target)
    run_pipeline(module, passes)
    plan = passes[0].plan  # type: ignore[attr-defined]
    for number, phase in enumerate(plan.phases):
        assert {module.op(n).attrs["phase"] for n in phase.layers} == {number}


def brute_force(model: PhaseModel, n: int, batch: int, bandwidth: float,
                start: int = 0) -> float:
    """The cheapest run of layers [start, n) in phases that fit."""
    best = float("inf")
    for count in range(n - start):
        for inner in itertools.combinations(range(start + 1, n), count):
            cuts = [start, *inner, n]
            if all(model.fits(a, b) for a, b in itertools.pairwise(cuts)):
                best = min(best, sum(model.phase(a, b).cycles(batch, bandwidth)
                                     for a, b in itertools.pairwise(cuts)))
    return best


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_optimal_partition_is_the_cheapest_of_all_cut_sets(seed: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    widths = [16, *(int(w) for w in rng.choice([8, 16, 32], size=9))]
    module = tiled(chain(widths, seed))
    target = load_target("tiny")
    model = PhaseModel(module, layers_of(module, target), target, batch, 0.0)
    n = len(model.layers)
    optimal = partition(module, target, "optimal", batch)
    greedy = partition(module, target, "greedy", batch)
    assert optimal.cycles == pytest.approx(brute_force(model, n, batch,
                                                       target.global_bytes_per_cycle))
    assert optimal.cycles <= greedy.cycles
    # The search's running sums cost every phase as `phase` does.
    bandwidth = target.global_bytes_per_cycle
    for start in range(n):
        grown = dict(model._growing(start, bandwidth))
        assert sorted(grown) == [stop for stop in range(start + 1, n + 1)
                                 if model.fits(start, stop)]
        for stop, cycles in grown.items():
            assert cycles == pytest.approx(model.phase(start, stop).cycles(batch, bandwidth))
    # The bound the search skips starts with is below every way of running the rest.
    bound = model._rest_bound(bandwidth)
    for start in range(n):
        assert bound[start] <= brute_force(model, n, batch, bandwidth, start) * (1 + 1e-9)


def test_greedy_fills_each_phase_while_the_next_layer_fits() -> None:
    module = tiled(chain([16, 32, 16, 32, 16, 32, 16, 16, 16]))
    target = load_target("tiny")
    plan = partition(module, target, "greedy")
    model = PhaseModel(module, layers_of(module, target), target, 1, 0.0)
    for phase in plan.phases[:-1]:
        assert not model.fits(phase.start, phase.stop + 1)


def test_batch_amortizes_programming() -> None:
    module = tiled(chain([16, 32, 16, 32, 16, 32, 16, 16, 16]))
    target = load_target("tiny")
    one, many = (partition(module, target, "optimal", b) for b in (1, 16))
    assert many.throughput > one.throughput


def test_a_layer_larger_than_the_chip_is_split_by_output_channels() -> None:
    # fc1: 64 x 256 weights, 4 row blocks of 16 columns (64 cell columns each) per
    # column block: 4096 cell columns, eight times the chip; it is cut into a piece per
    # column block, spread over phases in order.
    module = tiled(chain([16, 64, 256, 16]))
    target = load_target("tiny")
    passes = parse_pipeline("partition", target)
    run_pipeline(module, passes)
    plan = passes[0].plan  # type: ignore[attr-defined]
    pieces = [layer for layer in plan.layers if layer.name == "fc1"]
    assert len(pieces) == 16 and all(p.parts == 16 for p in pieces)
    assert sorted(j for p in pieces for j in p.column_blocks) == list(range(16))
    assert sum(p.share for p in pieces) == pytest.approx(1.0)
    assert all(p.columns <= target.total_crossbars * target.cols for p in plan.phases)
    # fc1 is now a matvec per phase its blocks run in, each computing its output
    # channels, and a concat of them in the last one.
    ops = [op for op in module.ops() if op.kind in ("matvec", "join")]
    parts = [op for op in ops if op.name.startswith("fc1.part")]
    order = [op.attrs["phase"] for op in ops]
    assert order == sorted(order) and order[0] == 0 and order[-1] == len(plan.phases) - 1
    assert len(parts) >= 8 and len({op.attrs["phase"] for op in parts}) == len(parts)
    assert sum(module.values[op.outputs[0]].shape[1] for op in parts) == 256
    join = module.op("fc1.join")
    assert join.inputs == [op.outputs[0] for op in parts]
    assert join.attrs["phase"] == parts[-1].attrs["phase"]
    assert all(op.name.startswith("fc2") for op in module.consumers(join.outputs[0]))


def test_tile_narrows_the_blocks_of_a_layer_larger_than_the_chip_only() -> None:
    fits, big = tiled(chain([16, 16, 16])), tiled(chain([16, 256, 64]))
    assert fits.op("fc0").attrs["block_cols"] == 16
    # 16 row blocks x 4 slices x 16 columns = 1024 > 512: one column of blocks fits
    # only at 8 weight columns.
    assert big.op("fc1").attrs["block_cols"] == 8


def test_a_layer_whose_one_output_channel_exceeds_the_chip_is_named() -> None:
    module = tiled(chain([2080, 16]))  # 130 row blocks x 4 cell columns > 512
    with pytest.raises(CimcError, match=r"op 'fc0': one output channel's weights \(130 "
                                        r"blocks of 16 rows\) need 33 crossbars"):
        partition(module, load_target("tiny"))


def test_a_target_that_cannot_be_reprogrammed_refuses_phases() -> None:
    module = tiled(chain([16, 32, 16, 32, 16, 32, 16, 16, 16]))
    fixed = dataclasses.replace(load_target("tiny"), reprogrammable=False)
    with pytest.raises(CimcError, match="cannot be reprogrammed"):
        partition(module, fixed)
    assert isinstance(partition(tiled(chain([16, 16])), fixed), PhasePlan)


def test_bad_options_are_refused() -> None:
    module = tiled(chain([16, 16]))
    for spec, message in (("partition{method=best}", "method 'best'"),
                          ("partition{batch=0}", "batch 0")):
        with pytest.raises(CimcError, match=message):
            run_pipeline(module, parse_pipeline(spec, load_target("tiny")))


def test_the_phases_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    source = tmp_path / "chain.cir"
    source.write_text(chain([16, 64, 256, 32, 16, 32, 16]))
    printed = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-m", "cimc", "opt", "--target", "tiny", "-p",
                               "lower,tile,partition", str(source)], capture_output=True,
                              text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        printed.add(done.stdout)
    assert len(printed) == 1 and "fc1.part" in printed.pop()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_each_core_ends_where_packing_from_its_first_block_ends(seed: int) -> None:
    """`_core_ends` (one sliding window) against packing each core anew: blocks in order
    while the demands of their distinct weights fit, the first always."""
    rng = np.random.default_rng(seed)
    per_core = 64
    blocks = [(k, int(rng.choice([8, 16, 32, 64, 80])), int(rng.integers(0, 6)))
              for k in range(60)]
    demand_of = {key: demand for _, demand, key in blocks}  # one demand per weight
    blocks = [(k, demand_of[key], key) for k, _, key in blocks]
    expected = []
    for j in range(len(blocks)):
        held, room, stop = set(), 0, j
        while stop < len(blocks):
            _, demand, key = blocks[stop]
            if key not in held:
                if stop > j and room + demand > per_core:
                    break
                held.add(key)
                room += demand
            stop += 1
        expected.append(stop)
    assert PhaseModel._core_ends(blocks, per_core) == expected
