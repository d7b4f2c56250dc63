"""The compile report: what the program uses of the target and what it costs.

Static figures come from the scheduled module (crossbars, cores, utilization,
network traffic); cycles, throughput and energy from the timing model
(cimc/analysis/timing.py) by default, or from the simulator running the
program (`--simulate`, `cimc run`) (docs/backend.md, "Report").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cimc.analysis.plan import Plan, build, row_bound
from cimc.analysis.timing import Timing, model
from cimc.analysis.traffic import (
    TrafficEdge,
    global_bytes,
    link_loads,
    max_link_bytes,
    unit_cores,
    unit_edges,
    units,
)
from cimc.analysis.traffic import hop_bytes as traffic_hop_bytes
from cimc.codegen.generate import CoreCode, Generated, mode_of, plan_and_code
from cimc.dialect.chip import CHIP_KINDS, block_shape, blocks_of
from cimc.dialect.phased import phase_modules
from cimc.ir.module import Module
from cimc.isa.encoding import encode_program
from cimc.isa.simulator.reprogram import program_time
from cimc.targets import Target


@dataclass(frozen=True)
class Traffic:
    """The unit edges of a scheduled module, kept with it for the report's figures."""

    target: Target
    edges: list[TrafficEdge]


def traffic(module: Module, target: Target) -> list[TrafficEdge]:
    """unit_edges, computed once per scheduled module (the report reads them three times)."""
    kept = module.analysis(Traffic)
    if kept is None or kept.target != target:
        kept = Traffic(target, unit_edges(module, target))
        module.keep_analysis(kept)
    return kept.edges


def static_figures(module: Module, target: Target, cores: dict[int, CoreCode]) -> dict[str, Any]:
    """Crossbars, cores, utilization and hop_bytes of a scheduled module."""
    crossbars: set[tuple[int, int]] = set()
    weight_cells = 0
    for op in module.ops():
        if op.kind != "matvec":
            continue
        s = op.attrs["slices"]
        flat = op.attrs["block_slices"]
        blocks = blocks_of(op)
        for k in range(len(op.attrs["block_cores"])):
            rows, cols = block_shape(module, op, *blocks[k % len(blocks)])
            weight_cells += (rows.stop - rows.start) * (cols.stop - cols.start) * s
            for d in range(s):
                crossbars.add((op.attrs["block_cores"][k], flat[2 * (k * s + d)]))

    edges, where = traffic(module, target), unit_cores(module)
    hop_bytes = traffic_hop_bytes(edges, where, target)
    allocated = len(crossbars) * target.rows * target.cols
    return {
        "layers": layer_figures(module, target),
        "target": target.name,
        "crossbars_used": len(crossbars),
        "crossbars_available": target.cores * target.crossbars_per_core,
        "cores_used": len(cores),
        "cores_available": target.cores,
        "utilization": weight_cells / allocated if allocated else 0.0,
        "hop_bytes": hop_bytes,
        # Bytes per inference over each directed mesh link on XY routes (the pictures').
        "link_bytes": [{"from": list(a), "to": list(b), "bytes": size}
                       for (a, b), size in link_loads(edges, where, target).items()],
        "local_memory_peak": max((c.peak + target.local_memory_bytes - c.top
                                  for c in cores.values()), default=0),
    }


def layer_figures(module: Module, target: Target) -> list[dict[str, Any]]:
    """Per chip op, in program order: its cores, crossbars, weight cells, MVMs, the
    hop_bytes of the messages it sends and the bytes it loads from and stores to global
    memory. MVMs, weight cells and hop_bytes add up to the report's totals (a message is
    the sender's); crossbars and cores do not where layers share them."""
    edges, where = traffic(module, target), unit_cores(module)
    of_unit = {u.name: u for u in _units(module, target)}
    of_op: dict[str, list[Any]] = defaultdict(list)
    for u in of_unit.values():
        of_op[u.op].append(u)
    sent: dict[str, list[TrafficEdge]] = defaultdict(list)
    for edge in edges:
        sender = edge.dst if edge.kind == "input" else edge.src
        sent[of_unit[sender].op].append(edge)
    layers = []
    for op in module.ops():
        units = of_op.get(op.name, [])
        if not units:
            continue
        crossbars: set[tuple[int, int]] = set()
        if op.kind == "matvec":
            s, flat = op.attrs["slices"], op.attrs["block_slices"]
            for k, core in enumerate(op.attrs["block_cores"]):
                crossbars.update((core, flat[2 * (k * s + d)]) for d in range(s))
        mine = sent.get(op.name, [])
        layers.append({
            "name": op.name,
            "kind": op.kind,
            "cores": sorted({where[u.name] for u in units}),
            "crossbars": len(crossbars),
            "weight_cells": sum(u.weight_rows * u.weight_cols * u.slices for u in units),
            "mvms": sum(u.windows for u in units if u.kind == "block"),
            "hop_bytes_out": traffic_hop_bytes(mine, where, target),
            "global_bytes_in": global_bytes([e for e in mine if e.kind == "input"], where),
            "global_bytes_out": global_bytes([e for e in mine if e.kind == "output"], where),
        })
    return layers


def host_work(module: Module) -> list[str]:
    """Ops the host runs around the program: input quantize, output dequantize, float tails."""

    return [f"{op.name} ({op.kind})" for op in module.ops() if op.kind not in CHIP_KINDS]


@dataclass
class LatencyPlan:
    """The plan of one inference in latency mode, whose bounds the report gives for a
    module scheduled in throughput mode."""

    target: Target
    plan: Plan


def core_work(module: Module, target: Target, plan: Plan, timing: Timing) -> float:
    """The busiest core's work per inference: per group it works for, its rows' MVM time
    (`row_bound`) or the time its own instructions take (the timing model's `work`,
    waiting left out), whichever is longer, since a core runs one row task at a time."""
    stream = stream_of(module)
    total: dict[int, float] = defaultdict(float)
    for gi, g in enumerate(plan.groups):
        for core in g.cores:
            own = timing.work.get((core, gi), 0) / stream
            total[core] += max(len(g.rows) * row_bound(module, target, g, core), own)
    return max(total.values(), default=0.0)


def schedule_bounds(module: Module, target: Target, timing: Timing | None = None
                    ) -> dict[str, Any]:
    """What the mapping allows: the slowest stage and the critical path (docs/backend.md,
    "Bounds"), in cycles, ns and inferences per second. `timing` is the timing model's
    run of the program (made here when not given)."""

    # The bounds are those of one inference in latency mode: the plan `schedule` kept
    # when it is that one, else one made (once) and kept beside it.
    kept, bounding = module.analysis(Generated), module.analysis(LatencyPlan)
    if kept is not None and kept.target == target and mode_of(module) == ("latency", 1):
        plan = kept.plan
    elif bounding is not None and bounding.target == target:
        plan = bounding.plan
    else:
        plan = build(module, target)
        module.keep_analysis(LatencyPlan(target, plan))
    edges, cores = traffic(module, target), unit_cores(module)
    code = plan_and_code(module, target)
    if timing is None:
        timing = model(module, target, code.plan)
    stages = {
        "core_mvm": max(plan.core_bound.values(), default=0.0),
        "core_work": core_work(module, target, code.plan, timing),
        "global_memory": global_bytes(edges, cores) / target.global_bytes_per_cycle,
        "network_link": max_link_bytes(edges, cores, target) / target.link_bytes_per_cycle,
    }
    period = max(stages.values())
    ns = 1e3 / target.clock_mhz
    return {
        "throughput_bound": target.clock_mhz * 1e6 / period if period else 0.0,
        "period_bound_cycles": period,
        "bound_stage": max(stages, key=lambda k: stages[k]),
        "stage_cycles": stages,
        "latency_bound_cycles": plan.latency_bound,
        "latency_bound_ns": plan.latency_bound * ns,
        # The hardware's own limit, beyond this schedule (a core running its groups' MVMs
        # at once): the busiest crossbar.
        "crossbar_bound_cycles": plan.crossbar_bound,
        "mvm_count": sum(u.windows for u in _units(module, target) if u.kind == "block"),
    }


def _units(module: Module, target: Target) -> list[Any]:

    return units(module, target)


def stream_of(module: Module) -> int:
    """Inferences one run of the program computes (the schedule's `stream`)."""
    return max((int(op.attrs.get("stream", 1)) for op in module.ops()), default=1)


def simulated_figures(module: Module, program: Any, sim: dict[str, Any]) -> dict[str, Any]:
    """The report's keys that come from one simulated run of the program.

    `throughput` counts the run's `stream` inferences over its cycles (pipeline
    fill and drain included, so it is at most the steady state; bench/schedule.py
    measures the steady state from two runs).
    """

    stream = stream_of(module)
    return {
        "cycles": sim["cycles"],
        "latency_us": sim["latency_us"],
        "latency_ns": sim["latency_us"] * 1e3,
        "stream": stream,
        "throughput": stream * sim["throughput_per_s"],
        "energy_nj": sim["energy_nj"]["total"] / stream,
        "energy_breakdown_nj": sim["energy_nj"],
        "instructions": sum(len(s.instructions) for s in program.streams.values()),
        "instructions_executed": sim["instructions"],
        "program_bytes": len(encode_program(program)),
        "simulated_hop_bytes": sim["hop_bytes"],
        "host_work": host_work(module),
    }


def modelled_figures(module: Module, target: Target, timing: Timing) -> dict[str, Any]:
    """The report's keys that the timing model's run gives (the simulator's keys of
    `simulated_figures`, without the executed-instruction count)."""
    stream = stream_of(module)
    energy = timing.energy_nj(target)
    latency_us = timing.cycles / target.clock_mhz
    return {
        "cycles": timing.cycles,
        "latency_us": latency_us,
        "latency_ns": latency_us * 1e3,
        "stream": stream,
        "throughput": stream * 1e6 / latency_us if latency_us else 0.0,
        "energy_nj": energy["total"] / stream,
        "energy_breakdown_nj": energy,
        "host_work": host_work(module),
    }


def program_figures(module: Module, target: Target, cores: dict[int, CoreCode], program: Any,
                    sim: dict[str, Any]) -> dict[str, Any]:
    """Every figure of a compiled program: static, bounds and one simulated run (the
    report of `cimc compile` and of `cimc run --engine sim`)."""
    figures = static_figures(module, target, cores)
    figures.update(schedule_bounds(module, target))
    figures.update(simulated_figures(module, program, sim))
    return figures


def phased_figures(module: Module, target: Target, generated: Generated,
                   cores: dict[int, CoreCode]) -> dict[str, Any]:
    """The figures of a module run in phases, modelled: per phase its layers, crossbars,
    the bytes `wprog` moves and the time it takes (the chip-wide weight channel, or a
    core's own groups one after the other, whichever is longer), the bytes it loads and
    stores per image, and the timing model's run of its code for the batch; totals per
    run and per inference (docs/backend.md, "partition"). The bounds of a one-phase
    report do not apply to a run of phases and are left out."""
    batch = stream_of(module)
    phases = []
    layers: list[dict[str, Any]] = []
    totals: dict[str, float] = defaultdict(float)
    used_crossbars = 0
    for number, (phase, plan) in enumerate(zip(phase_modules(module), generated.phases,
                                               strict=True)):
        timing = model(phase, target, plan)
        static = static_figures(phase, target, {c: cores[c] for c in plan.order})
        channel = cells = 0
        per_core: dict[int, int] = defaultdict(int)
        programmed: set[tuple[int, int]] = set()  # (core, group): shared cells once
        for op in phase.ops():
            if op.kind != "matvec":
                continue
            blocks = blocks_of(op)
            for k, core in enumerate(op.attrs["block_cores"]):
                if (core, op.attrs["block_groups"][k]) in programmed:
                    continue
                programmed.add((core, op.attrs["block_groups"][k]))
                rows, cols = block_shape(module, op, *blocks[k % len(blocks)])
                count = (rows.stop - rows.start) * (cols.stop - cols.start) * op.attrs["slices"]
                transfer, write = program_time(count, rows.stop - rows.start, target)
                channel += transfer
                per_core[core] += transfer + write
                cells += count
        program = max([channel, *per_core.values()])
        loaded = sum(module.values[op.outputs[0]].size for op in phase.ops()
                     if op.kind == "global")
        stored = sum(module.values[v].size for v in phase.outputs)
        energy = timing.energy_nj(target)
        program_nj = cells * target.energy.program_per_cell / 1000.0
        for layer in static["layers"]:
            layers.append({**layer, "phase": number})
        used_crossbars = max(used_crossbars, static["crossbars_used"])
        phases.append({
            "phase": number,
            "layers": [layer["name"] for layer in static["layers"]],
            "crossbars": static["crossbars_used"],
            "cores": static["cores_used"],
            "programmed_bytes": -(-cells * target.cell_bits // 8),
            "spilled_bytes_per_image": {"loaded": loaded, "stored": stored},
            "program_cycles": program,
            "compute_cycles": timing.cycles,
            "cycles": program + timing.cycles,
        })
        totals["cycles"] += program + timing.cycles
        totals["energy"] += energy["total"] + program_nj
        totals["hop_bytes"] += static["hop_bytes"]
        totals["programmed_bytes"] += phases[-1]["programmed_bytes"]
    cycles = totals["cycles"]
    latency_us = cycles / target.clock_mhz
    return {
        "layers": layers,
        "target": target.name,
        "phase_count": len(phases),
        "batch": batch,
        "phases": phases,
        "crossbars_used": used_crossbars,
        "crossbars_available": target.total_crossbars,
        "cores_used": len(cores),
        "cores_available": target.cores,
        "hop_bytes": int(totals["hop_bytes"]),
        "programmed_bytes": int(totals["programmed_bytes"]),
        "local_memory_peak": max((c.peak + target.local_memory_bytes - c.top
                                  for c in cores.values()), default=0),
        "cycles": cycles,
        "latency_us": latency_us,
        "latency_ns": latency_us * 1e3,
        "stream": batch,
        "throughput": batch * 1e6 / latency_us if latency_us else 0.0,
        "energy_nj": totals["energy"] / batch,
        "mvm_count": sum(layer["mvms"] for layer in layers),
        "host_work": host_work(module),
    }
