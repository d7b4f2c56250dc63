"""The place pass and its placers: capacity, cost model, bound, determinism."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import backend_models
import numpy as np
import pytest

from cimc.analysis.traffic import hop_bytes, unit_cores, unit_edges
from cimc.dialect.chip import rounded_width
from cimc.frontend.importer import import_onnx
from cimc.ir.module import Module
from cimc.pass_manager import parse_pipeline, run_pipeline
from cimc.passes.place import PLACERS, Place
from cimc.pipeline import FRONTEND
from cimc.placement.baselines import (
    anneal,
    core_order,
    curve_order,
    fill,
    fit_load_cap,
    payload_order,
)
from cimc.placement.bound import hop_bytes_bound
from cimc.placement.cpsat import search, solve_window
from cimc.placement.problem import Payload, Problem, build_problem, distribute, pack
from cimc.targets import load_target


def _place(target: str, **options: Any) -> Place:
    """The place pass with `options`, for `target` (the pipeline's target)."""
    run = Place(**options)
    run.target = load_target(target)
    return run


def tiled(name: str, target: str) -> Module:
    module = import_onnx(str(backend_models.quantized_model(name)))
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    run_pipeline(module, parse_pipeline("lower,tile,replicate", load_target(target)))
    return module


@pytest.fixture(scope="module")
def mnist() -> Module:
    return tiled("mnist_tiny", "tiny")


def chain_problem(layers: int, blocks: int, target: str = "pimcomp") -> Problem:
    """A synthetic chain: each layer's blocks all send psums to its first block, which
    broadcasts its output to every block of the next layer."""
    t = load_target(target)
    n = layers * blocks
    payloads = []
    for layer in range(layers):
        first = layer * blocks
        payloads.append(Payload(first, np.arange(first + 1, first + blocks), 4096, "psum"))
        if layer + 1 < layers:
            nxt = (layer + 1) * blocks
            payloads.append(Payload(first, np.arange(nxt, nxt + blocks), 1024, "activation"))
    demand = np.full(n, t.cols * t.slices, dtype=np.int64)
    return Problem([f"u{k}" for k in range(n)], demand, np.zeros(n, dtype=np.int64), payloads,
                   t, t.crossbars_per_core * t.cols, t.local_memory_bytes // 2, demand.copy())


def test_rounded_widths_divide_the_crossbar() -> None:
    assert [rounded_width(w, 128) for w in (128, 104, 64, 33, 32, 17, 1)] == \
        [128, 128, 64, 64, 32, 32, 1]


def test_cost_counts_a_payload_once_per_distinct_core() -> None:
    p = chain_problem(2, 4)
    tiles = np.array([0, 0, 1, 1, 2, 2, 13, 13])  # pimcomp: 12 tiles a row
    # psum of layer 0: blocks on tile 0 free, tile 1 once at 1 hop; layer 1: tile 13 is 2 hops
    # from tile 2... activation from tile 0 to tiles 2 (2 hops) and 13 (2 hops), once each.
    psum0, psum1, act = 4096 * 1, 4096 * 2, 1024 * (2 + 2)
    assert p.cost(tiles) == psum0 + psum1 + act


def test_fill_respects_capacity_and_orders() -> None:
    p = chain_problem(5, 40)  # pimcomp holds 16 full blocks per core
    for order in (core_order(p, snake=False), core_order(p, snake=True), curve_order(p)):
        cores = fill(p, order)
        assert p.fits(cores)
        assert np.bincount(cores).max() == 16
        assert sorted(set(order)) == list(range(p.target.cores))
    snake = core_order(p, snake=True)
    assert snake[:14] == [*range(12), 23, 22]
    curve = curve_order(p)
    assert all(p.hops[a, b] == 1 for a, b in zip(curve, curve[1:], strict=False)
               if a < 132 and b < 132)


def test_placers_beat_sequential_and_never_beat_the_bound() -> None:
    p = chain_problem(8, 40)
    seq = p.cost(fill(p, core_order(p, snake=False)))
    start = fill(p, curve_order(p))
    tiles, log = search(p, start, 0.1, seed=3)
    annealed, _ = anneal(p, fill(p, core_order(p, snake=True)), 5000, seed=3)
    bound = hop_bytes_bound(p)
    assert p.fits(tiles) and p.fits(annealed)
    assert 0 < bound <= p.cost(tiles) < seq
    assert bound <= p.cost(annealed)
    assert log.windows > 0


def test_core_exchanges_move_whole_cores_and_keep_capacity() -> None:
    p = chain_problem(8, 40)
    # The layer-order fill with its cores scattered over the mesh: only exchanging
    # whole cores (every proposal here) can bring the layers back together.
    scattered = np.random.default_rng(0).permutation(p.tiles)[fill(p, core_order(p, False))]
    exchanged, _ = anneal(p, scattered, 4000, seed=1, exchanges=1.0)
    assert p.fits(exchanged)
    assert p.cost(exchanged) < 0.7 * p.cost(scattered)
    # Cores keep their contents: the units that shared a core still do.
    pairs = {(int(a), int(b)) for a, b in zip(scattered, exchanged, strict=True)}
    assert len(pairs) == len(set(scattered.tolist()))


@pytest.mark.parametrize("target", ["pimcomp", "isaac"])
def test_annealer_changes_are_the_recomputed_cost(target: str) -> None:
    """Every proposal's change (made or refused, moves, swaps and core exchanges) equals
    the difference of hop_bytes recomputed from scratch, and loads stay tracked."""
    import random

    from cimc.placement.baselines import Annealer, _step

    p = chain_problem(8, 40, target)
    p.groups = np.repeat(np.arange(8), 40)
    p.group_load = np.full(8, 10, dtype=np.int64)
    p.load_cap = 30
    state = Annealer(p, fill(p, core_order(p, snake=True)))
    draw = random.Random(5).random
    cost = p.cost(np.array(state.tile))
    made = 0
    for step in range(3000):
        # Every third proposal is refused (a limit below any change), the others made.
        outcome = _step(state, draw, len(p.names), 0.3, -np.inf if step % 3 == 0 else np.inf)
        if outcome is not None and outcome[2]:
            cost += outcome[0]
            made += 1
        if step % 100 == 0:
            tiles = np.array(state.tile)
            assert cost == p.cost(tiles)
            assert p.fits(tiles)
            assert state.load == p.loads(tiles).tolist()
    assert made > 1000


def test_budget_grows_with_the_problem() -> None:
    from cimc.placement.baselines import MIN_MOVES, anneal_moves
    from cimc.placement.cpsat import window_budget

    small, large = chain_problem(1, 12), chain_problem(12, 40)
    assert anneal_moves(small, 1.0) == MIN_MOVES
    assert anneal_moves(large, 1.0) == 80 * 480
    assert anneal_moves(large, 2.0) == 2 * anneal_moves(large, 1.0)
    assert window_budget(small, 1.0) == 0 and window_budget(large, 1.0) == 1


def test_small_network_anneals_without_windows_and_large_one_gets_them() -> None:
    from cimc.placement.search import improve

    small = chain_problem(2, 20)  # 40 units: below one window's share
    _, log = improve(small, 1.0, seed=0)
    assert log.windows == 0
    large = chain_problem(12, 40)
    placed, log = improve(large, 1.0, seed=0)
    assert log.windows == 1
    assert large.fits(placed)


def test_window_solve_is_optimal_on_a_two_tile_swap() -> None:
    p = chain_problem(2, 16)
    # Layers interleaved over tiles 0 and 1: the optimum puts each layer on one tile.
    tiles = np.array([0, 1] * 16)
    better = solve_window(p, tiles, [0, 1], seed=0)
    assert better is not None and p.fits(better)
    assert p.cost(better) == 1024  # only the activation crosses, one hop
    assert p.cost(better) < p.cost(tiles)


def test_bound_is_zero_when_everything_fits_one_core() -> None:
    assert hop_bytes_bound(chain_problem(1, 16)) == 0
    assert hop_bytes_bound(chain_problem(1, 17)) == 4096  # one block spills one hop away


def test_a_payload_goes_once_to_each_core_even_within_a_tile() -> None:
    p = chain_problem(1, 5, "isaac")  # isaac: 12 cores a tile, 2 full blocks a core
    one_core = np.array([0, 12, 12, 12, 12])
    assert distribute(p, one_core) is None  # 4 blocks on core 12: over capacity
    two_cores = np.array([0, 12, 12, 13, 13])  # tile 1 is one hop from tile 0
    assert p.cost(two_cores) == 4096 * 2
    same_tile = np.array([0, 1, 1, 2, 2])  # cores of tile 0: free
    assert p.cost(same_tile) == 0


def test_packing_puts_slices_in_distinct_aligned_places(mnist: Module) -> None:
    target = load_target("tiny")
    problem, found = build_problem(mnist, target)
    fit_load_cap(problem)
    cores = fill(problem, core_order(problem, snake=False))
    places = pack(problem, cores, [u.slices for u in found])
    seen = set()
    for u, spots in places.items():
        width = int(problem.demand[u]) // found[u].slices
        for xbar, col in spots:
            assert col % width == 0 and col + width <= target.cols
            for c in range(col, col + width):
                assert (int(cores[u]), xbar, c) not in seen
                seen.add((int(cores[u]), xbar, c))


@pytest.mark.parametrize("placer", PLACERS)
def test_place_pass_cost_equals_traffic_model(mnist: Module, placer: str) -> None:
    target = load_target("tiny")
    module = copy.deepcopy(mnist)
    run = _place("tiny", placer=placer, effort=0.05)
    run.apply(module)
    assert run.summary is not None
    edges = unit_edges(module, target)
    assert run.summary.hop_bytes == hop_bytes(edges, unit_cores(module), target)
    assert 0 <= run.summary.hop_bytes_bound <= run.summary.hop_bytes
    for op in module.ops():
        if op.kind == "matvec":
            n = len(op.attrs["blocks"]) // 2 * op.attrs.get("replicas", 1)
            assert len(op.attrs["block_cores"]) == len(op.attrs["block_groups"]) == n
            assert len(op.attrs["block_slices"]) == 2 * n * op.attrs["slices"]


def test_cpsat_placement_is_deterministic(mnist: Module) -> None:
    results = []
    for _ in range(2):
        module = copy.deepcopy(mnist)
        _place("tiny", placer="cpsat", effort=0.05, seed=7).apply(module)
        results.append([op.attrs.get("block_cores", op.attrs.get("core"))
                        for op in module.ops()])
    assert results[0] == results[1]


@pytest.mark.parametrize("placer", ["cpsat", "anneal"])
def test_placement_does_not_depend_on_the_clock(mnist: Module, placer: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine so slow (or busy) that every clock reading is 1000 s later places the
    same: the search counts its work and reads no clock without a time limit."""
    import itertools
    import time

    placed = []
    clock = itertools.count(0.0, 1000.0)
    for slow in (False, True):
        if slow:
            monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
        module = copy.deepcopy(mnist)
        run = _place("tiny", placer=placer, effort=0.05)
        run.apply(module)
        assert run.summary is not None and not run.summary.timed_out
        placed.append(unit_cores(module))
    assert placed[0] == placed[1]


def test_wall_clock_safety_net_warns_when_it_fires(mnist: Module,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import itertools
    import time

    clock = itertools.count(0.0, 1000.0)
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    run = _place("tiny", placer="cpsat", effort=0.05, time_limit=5)
    run.apply(copy.deepcopy(mnist))
    assert run.summary is not None and run.summary.timed_out
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1
    assert "wall-clock limit of 5 s stopped the placer" in warning


def test_load_cap_keeps_core_loads_and_spreads_replicas() -> None:
    """Every placer keeps each core's MVM load (distinct groups' windows) under the cap;
    two replicas at the cap never share a core."""
    p = chain_problem(6, 8)
    # Groups: each layer's blocks; layers 0 and 1 are two replicas of one op at the cap.
    p.groups = np.repeat(np.arange(6), 8)
    p.group_load = np.array([100, 100, 40, 40, 40, 40])
    p.load_cap = 100
    from cimc.passes.place import run_placer
    for placer in PLACERS:
        cores, _ = run_placer(p, placer, 0.05, seed=1)
        assert p.fits(cores), placer
        assert int(p.loads(cores).max()) <= 100
        assert not set(cores[:8].tolist()) & set(cores[8:16].tolist())


def test_a_shared_core_keeps_the_cap_and_a_lone_group_may_exceed_it() -> None:
    """Groups sharing a core run at once in the pipeline: their load stays under the cap,
    while the slowest group, alone on its cores, is the stage and may exceed it."""
    p = chain_problem(4, 8)
    p.groups = np.repeat(np.arange(4), 8)
    p.group_load = np.array([100, 30, 30, 30])
    p.load_cap = 50
    from cimc.passes.place import run_placer
    for placer in PLACERS:
        cores, _ = run_placer(p, placer, 0.05, seed=1)
        assert p.fits(cores), placer
        loads, counts = p.loads(cores), p.group_counts(cores)
        assert ((loads <= 50) | (counts == 1)).all(), placer
        assert int(counts[cores[:8]].max()) == 1  # the 100-window group shares no core
    assert not p.loads_fit(np.array([0] * 8 + [1] * 16 + [2] * 8))  # 30 + 30 > 50
    assert p.loads_fit(np.array([0] * 8 + [1] * 8 + [2] * 8 + [3] * 8))


def test_cpsat_beats_anneal_and_snake_given_the_same_effort() -> None:
    from cimc.passes.place import run_placer
    p = chain_problem(12, 40)
    costs = {placer: p.cost(run_placer(p, placer, 0.1, seed=0)[0]) for placer in PLACERS}
    assert costs["cpsat"] < costs["anneal"] and costs["cpsat"] < costs["snake"]
    assert costs["cpsat"] <= 0.7 * costs["sequential"]
    assert hop_bytes_bound(p) <= costs["cpsat"]


def test_network_figures_fall_with_hop_bytes() -> None:
    """The simulator moves exactly the placement's hop_bytes; fewer of them cost less
    network energy."""
    import cimc

    model = backend_models.quantized_model("mnist_tiny")
    reports = {placer: cimc.compile(model, "tiny", placer=placer,
                                    place_effort=0.1).simulated_report
               for placer in ("sequential", "cpsat")}
    seq, opt = reports["sequential"], reports["cpsat"]
    for report in (seq, opt):
        assert report["simulated_hop_bytes"] == report["hop_bytes"]
    assert opt["hop_bytes"] < seq["hop_bytes"]
    network = "network"
    assert opt["energy_breakdown_nj"][network] < seq["energy_breakdown_nj"][network]


# heavy: the default effort places ResNet-18 in tens of seconds on a loaded
# machine (bench/placement.py measures the same criterion).
@pytest.mark.heavy
def test_resnet18_on_pimcomp_default_placer() -> None:
    """Model scale: the default placer at its default limit <= 0.7x sequential, above
    the bound, and the same placement twice."""
    import models

    module = import_onnx(str(models.quantized_model("resnet18")))
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    run_pipeline(module, parse_pipeline("lower,tile,replicate", load_target("pimcomp")))
    sequential = _place("pimcomp", placer="sequential")
    sequential.apply(copy.deepcopy(module))
    placed = []
    for _ in range(2):
        run = _place("pimcomp")
        placed_module = copy.deepcopy(module)
        run.apply(placed_module)
        assert run.summary is not None and sequential.summary is not None
        assert not run.summary.timed_out
        assert run.summary.hop_bytes <= 0.7 * sequential.summary.hop_bytes
        assert 0 < run.summary.hop_bytes_bound <= run.summary.hop_bytes
        placed.append(unit_cores(placed_module))
    assert placed[0] == placed[1]


@pytest.mark.parametrize("target", ["tiny", "isaac", "pimcomp"])
def test_core_hops_are_the_targets_mesh_distances(target: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import cimc.placement.problem
    from cimc.placement.problem import CoreHops

    t = load_target(target)
    hops = CoreHops(t)
    every = [[t.hops(a, b) for b in range(t.cores)] for a in range(t.cores)]
    assert [hops.row(a) for a in range(t.cores)] == every
    monkeypatch.setattr(cimc.placement.problem, "ROW_CACHE_MIN", 1 << 40)  # rows of a huge mesh
    assert [list(CoreHops(t).row(a)) for a in range(t.cores)] == every
    assert hops[3, np.arange(t.cores)].tolist() == every[3]
    assert hops.most() == max(max(row) for row in every)


@pytest.mark.parametrize("target", ["isaac", "pimcomp"])
def test_rings_are_exact_and_beyond_exact_counting_stay_above(monkeypatch, target: str) -> None:  # type: ignore[no-untyped-def]
    import cimc.placement.bound as bound

    p = chain_problem(2, 4, target)
    exact = bound.rings(p)
    every = np.array([p.hops.row(a) for a in range(p.tiles)])
    assert exact == [int(max(np.count_nonzero(row == d) for row in every))
                     for d in range(int(every.max()) + 1)]
    monkeypatch.setattr(bound, "EXACT_RING_TILES", 0)
    above = bound.rings(p)
    assert len(above) == len(exact) and all(a >= e for a, e in zip(above, exact, strict=True))


def test_a_256x256_mesh_compiles_without_tables_of_all_core_pairs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """131072 cores: an all-pairs hop table would take 137 GB (it was a MemoryError)."""
    from pathlib import Path

    import cimc

    tiny = (Path(__file__).resolve().parents[1] / "targets" / "tiny.toml").read_text()
    big = tmp_path / "big.toml"
    big.write_text(tiny.replace('name = "tiny"', 'name = "big"')
                   .replace("mesh_x = 2", "mesh_x = 256").replace("mesh_y = 2", "mesh_y = 256"))
    compiled = cimc.compile(backend_models.quantized_model("mnist_tiny"), big,
                            place_effort=0.1)
    assert compiled.target.cores == 131072
    assert compiled.placement["hop_bytes"] >= compiled.placement["hop_bytes_bound"] >= 0


def test_packing_spreads_a_groups_blocks_over_crossbars() -> None:
    """Blocks of one group sharing a crossbar take turns at every window, so the packing
    gives each its own crossbar while the core has one with room: eight 32-wide blocks
    of one group on a core of 64 crossbars take eight crossbars, not two."""
    t = load_target("pimcomp")
    p = chain_problem(1, 8)
    p.demand = np.full(8, 32, dtype=np.int64)
    p.groups = np.zeros(8, dtype=np.int64)
    places = pack(p, np.zeros(8, dtype=np.int64), [1] * 8)
    assert len({xbar for spots in places.values() for xbar, _ in spots}) == 8
    # A full core still packs: 4 groups of 64 blocks of 32 columns fill 64 crossbars,
    # each crossbar holding one block of every group.
    p = chain_problem(1, 256)
    p.demand = np.full(256, 32, dtype=np.int64)
    p.groups = np.repeat(np.arange(4), 64)
    places = pack(p, np.zeros(256, dtype=np.int64), [1] * 256)
    spots = [(u, spot) for u, found in places.items() for spot in found]
    assert len({spot for _, spot in spots}) == 256
    assert len({(int(p.groups[u]), x) for u, (x, _) in spots}) == 256
    assert {x for _, (x, _) in spots} == set(range(t.crossbars_per_core))


@pytest.mark.parametrize("placer", PLACERS)
def test_vector_ops_keep_a_core_to_themselves(placer: str) -> None:
    """A vector op beside a layer would delay that layer's rows: every placer puts each
    vector op on a core holding nothing else."""
    module = tiled("mnist_tiny", "pimcomp")
    run = _place("pimcomp", placer=placer, effort=0.2)
    run.apply(module)
    cores = unit_cores(module)
    vectors = [op.name for op in module.ops() if op.kind in ("pool", "eltwise", "rescale",
                                                            "join")]
    assert vectors
    for name in vectors:
        assert [u for u, c in cores.items() if c == cores[name]] == [name]


def test_repair_unshares_cores_whose_groups_delay_each_other() -> None:
    """hop_bytes puts consecutive layers on one core, where their rows take turns: the
    repair moves groups off the shared cores whose latency bound exceeds the critical
    path, so the placement's bound (the largest of the path and the shared cores')
    falls, and capacity and loads still hold."""
    from cimc.placement.baselines import fit_load_cap
    from cimc.placement.cpsat import SearchLog
    from cimc.placement.search import improve, repair
    from cimc.placement.stages import Stages

    target = load_target("pimcomp")
    module = tiled("mobilenetv2", "pimcomp")
    problem, _ = build_problem(module, target)
    fit_load_cap(problem)
    stages = Stages(module, target)

    def bound(cores: np.ndarray) -> float:
        on: dict[int, set[int]] = {}
        for u, c in enumerate(cores.tolist()):
            on.setdefault(c, set()).add(int(problem.groups[u]))
        return max([stages.path, *(stages.core(sorted(g)) for g in on.values())])

    searched, _ = improve(problem, 0.3, seed=0)
    log = SearchLog()
    repaired = repair(problem, stages, searched, log)
    assert log.repaired > 0
    assert problem.fits(repaired)
    assert bound(repaired) < bound(searched)
    # The critical path bounds every placement from below.
    assert bound(repaired) >= stages.path


def _apart_problem() -> Problem:
    """A block (its group above the shared-core cap), a vector op, a block of a light
    group and a vector op, in a chain of activations; plus a psum into the first block
    from a second block of its group. No two units of distinct groups may share a core."""
    t = load_target("pimcomp")
    payloads = [Payload(0, np.array([2]), 1000, "activation"),
                Payload(2, np.array([3]), 300, "activation"),
                Payload(3, np.array([4]), 200, "activation"),
                Payload(0, np.array([1]), 700, "psum")]
    demand = np.array([128, 128, 0, 128, 0], dtype=np.int64)
    groups = np.array([0, 0, 1, 2, 3], dtype=np.int64)
    load = np.array([200, 101, 5, 101], dtype=np.int64)
    return Problem([f"u{k}" for k in range(5)], demand, np.zeros(5, dtype=np.int64), payloads,
                   t, t.crossbars_per_core * t.cols, t.local_memory_bytes // 2, demand.copy(),
                   groups=groups, group_load=load, load_cap=100)


def test_bound_counts_units_that_cannot_share_a_core() -> None:
    """Units whose groups cannot share a core are a hop apart at least: the bound is at
    most the exhaustive optimum (units within 2 hops of unit 0 at the mesh's middle)
    and here equal to it."""
    p = _apart_problem()
    middle = 6 * 12 + 6
    near = [c for c in range(p.tiles) if p.hops[middle, c] <= 2]
    best = None
    for rest in itertools.product(near, repeat=len(p.names) - 1):
        cores = np.array([middle, *rest])
        if p.fits(cores):
            cost = p.cost(cores)
            best = cost if best is None else min(best, cost)
    assert best is not None
    bound = hop_bytes_bound(p)
    assert bound <= best
    # Every activation crosses a hop (its two ends cannot share), the psum does not.
    assert bound == best == 1000 + 300 + 200


def test_fill_keeps_a_group_above_the_cap_on_one_core() -> None:
    """A core holding one group alone may exceed the shared-core cap (Problem.loads_fit):
    the fill keeps that group's blocks together and opens a core for the next group."""
    p = chain_problem(2, 4)  # two layers of 4 full blocks; pimcomp holds 16 a core
    p.groups = np.array([0] * 4 + [1] * 4, dtype=np.int64)
    p.group_load = np.array([200, 10], dtype=np.int64)
    p.load_cap = 100
    cores = fill(p, core_order(p, snake=False))
    assert cores.tolist() == [0] * 4 + [1] * 4
    assert p.fits(cores)


def test_payload_order_groups_each_column_by_the_slice_its_blocks_read() -> None:
    """One layer of 2 columns x 8 row blocks, row block i reading input slice i % 2 (as a
    3x3 conv's rows interleave its input slices): the order runs down each column,
    the blocks of one slice together, the column's reducer among them; a fill of 4
    blocks a core then sends each slice to fewer cores than the layer order."""
    t = load_target("pimcomp")
    rows, columns = 8, 2
    unit = {(i, j): j * rows + i for i in range(rows) for j in range(columns)}  # column-major
    payloads = [Payload(unit[0, j], np.array([unit[i, j] for i in range(1, rows)]), 4096,
                        "psum") for j in range(columns)]
    senders = [rows * columns, rows * columns + 1]  # the previous layer's two reducers
    payloads += [Payload(senders[s], np.array(sorted(unit[i, j] for i in range(s, rows, 2)
                                                     for j in range(columns))), 4096,
                         "activation") for s in range(2)]
    n = rows * columns + 2
    demand = np.array([2048] * (n - 2) + [0, 0], dtype=np.int64)  # 4 blocks fill a core
    groups = np.array([0] * (n - 2) + [1, 2], dtype=np.int64)
    p = Problem([f"u{k}" for k in range(n)], demand, np.zeros(n, dtype=np.int64), payloads, t,
                t.crossbars_per_core * t.cols, t.local_memory_bytes // 2, demand.copy(),
                groups=groups, group_load=np.array([10, 10, 10], dtype=np.int64))
    order = payload_order(p)
    assert sorted(order) == list(range(n))
    column = [[u for u in order if u < n - 2 and u // rows == j] for j in range(columns)]
    for j, members in enumerate(column):
        assert order[j * rows:(j + 1) * rows] == members  # each column consecutive
        others = [u for u in members if u != unit[0, j]]
        assert [u % 2 for u in others] == sorted(u % 2 for u in others)  # slices together
        assert members.index(unit[0, j]) == (rows - 1) // 2  # the reducer in the middle
    # Each slice now reaches 2 cores per column, not all 4 cores of the layer.
    for s, payload in enumerate(p.payloads[2:]):
        by_order = fill(p, list(range(p.tiles)), order)[payload.others]
        by_layer = fill(p, list(range(p.tiles)))[payload.others]
        assert len(set(by_order.tolist())) < len(set(by_layer.tolist())) == 4, s
