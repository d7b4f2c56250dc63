"""The figures of a run, as a JSON-serializable dict.

Time and energy are those of running the program once, for one input: the
batch is simulated in lockstep only to check many inputs at once. Keys:

    target, clock_mhz, batch
    cycles                 latency of the run: the latest core's finish time
    latency_us             cycles / clock
    throughput_per_s       clock / cycles: inputs per second for back-to-back
                           runs of this program (no pipelining across runs)
    instructions           instructions executed, all cores
    mvm_instructions       mvm instructions executed
    crossbar_activations   crossbar reads (an mvm on a group spanning k crossbars counts k)
    adc_conversions
    bytes                  {"local", "global", "network"} bytes moved
    hop_bytes              network bytes x hops travelled
    programmed_cells       crossbar cells written by wprog
    programmed_bytes       bytes wprog moved from the off-chip weight store
    energy_nj              {"mvm", "adc", "vector", "local", "global", "network",
                            "scalar", "program", "total"} (timing.energy_pj)
    crossbar_utilization   busy crossbar-cycles / (programmed crossbars x cycles)
    chip_crossbar_utilization   the same over every crossbar of the target
    options                the what-if options of the run (added by run.simulate)
    cores                  per core: {"core", "finish", "busy", "instructions",
                           "mvm_instructions", "crossbars", "crossbar_utilization"}
"""

from __future__ import annotations

from typing import Any

from cimc.isa.simulator.machine import Machine
from cimc.isa.simulator.timing import EVENTS
from cimc.isa.simulator.timing import energy_pj as timing_energy


def _events(machine: Machine) -> dict[str, int]:
    totals = dict.fromkeys(EVENTS, 0)
    for core in machine.cores.values():
        for count, cost in zip(core.counts, core.costs, strict=True):
            if count:
                for name, amount in cost.events.items():
                    totals[name] += count * amount
    return totals


def _crossbar_busy(core: Any) -> tuple[int, int]:
    """(busy crossbar-cycles, crossbars programmed) of one core."""
    busy = sum(count * cost.cycles * len(cost.crossbars)
               for count, cost in zip(core.counts, core.costs, strict=True) if cost.crossbars)
    programmed = {x for state in core.groups.values() for x in state.group.crossbars()}
    return busy, len(programmed)


def build_report(machine: Machine) -> dict[str, Any]:
    """The report of a finished run."""
    target = machine.target
    events = _events(machine)
    cycles = max((core.clock for core in machine.cores.values()), default=0)
    energy_pj = timing_energy(events, target)
    energy_nj = {name: value / 1000.0 for name, value in energy_pj.items()}
    energy_nj["total"] = sum(energy_pj.values()) / 1000.0
    cores = []
    busy_total = programmed_total = 0
    for core in machine.cores.values():
        busy, programmed = _crossbar_busy(core)
        busy_total += busy
        programmed_total += programmed
        cores.append({
            "core": core.number,
            "finish": core.clock,
            "busy": core.busy,
            "instructions": sum(core.counts),
            "mvm_instructions": sum(n for n, c in zip(core.counts, core.costs, strict=True)
                                    if c.crossbars),
            "crossbars": programmed,
            "crossbar_utilization": busy / (programmed * cycles) if programmed and cycles else 0.0,
        })  # fmt: skip
    clock_hz = target.clock_mhz * 1e6
    return {
        "target": target.name,
        "clock_mhz": target.clock_mhz,
        "batch": machine.batch,
        "cycles": cycles,
        "latency_us": cycles / target.clock_mhz,
        "throughput_per_s": clock_hz / cycles if cycles else 0.0,
        "instructions": sum(c["instructions"] for c in cores),
        "mvm_instructions": events["mvm_instructions"],
        "crossbar_activations": events["crossbar_activations"],
        "adc_conversions": events["adc_conversions"],
        "bytes": {"local": events["local_bytes"], "global": events["global_bytes"],
                  "network": events["network_bytes"]},
        "hop_bytes": events["hop_bytes"],
        "programmed_cells": events["programmed_cells"],
        "programmed_bytes": events["programmed_bytes"],
        "energy_nj": energy_nj,
        "crossbar_utilization": busy_total / (programmed_total * cycles)
        if programmed_total and cycles else 0.0,
        "chip_crossbar_utilization": busy_total / (target.total_crossbars * cycles)
        if cycles else 0.0,
        "cores": cores,
    }
