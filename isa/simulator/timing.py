"""The static cost of each instruction: busy cycles and counted events.

An instruction's latency follows from its cost class (cimc.isa.table) and the
target's latency table: mvm takes ceil(8 / dac_bits) input steps of
`latency.mvm`; vector and requant instructions a per-element time; copy/fill
a per-byte time; ld/st len / global_bytes_per_cycle; send/recv their setup
time; scalar, branch, halt and sync `latency.scalar`; wprog moving the group's
packed cells over the weight channel, ceil(bytes / weight_bytes_per_cycle),
then writing its rows, ceil(rows_used x program_per_row) (reprogram.py
program_cycles).
Every instruction takes at least one cycle. Waiting (for a message, the
barrier, the shared global-memory or weight channel or a network link) comes
on top and is the machine's business.

The events an instruction causes (elements, bytes, crossbar steps, ADC
conversions...) are fixed by its operands, so they are counted once per
instruction and multiplied by how often it ran; energy is events x the
target's energy table (energy_pj).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from cimc.isa.image import CrossbarGroup
from cimc.isa.simulator.crossbar import input_steps
from cimc.isa.simulator.matrix import INPUT_BITS
from cimc.isa.simulator.registry import base_name
from cimc.isa.simulator.reprogram import program_cycles
from cimc.isa.table import ELEMENT_BYTES, InstructionSpec
from cimc.targets import Target

EVENTS: tuple[str, ...] = (
    "scalar_ops", "vector_elements", "requant_elements", "local_bytes", "global_bytes",
    "network_bytes", "hop_bytes", "crossbar_steps", "adc_conversions", "mvm_instructions",
    "crossbar_activations", "programmed_cells", "programmed_bytes",
)  # fmt: skip

# Bytes read + written per element, in units of the element size, by vector instruction.
_VECTOR_TRAFFIC = {
    "vadd": 3, "vsub": 3, "vmul": 3, "vmax": 3, "vmin": 3, "vdiv": 3,
    "vaddi": 2, "visqrt": 2, "vmaxi": 2, "vmini": 2, "vshl": 2, "vshr": 2,
}  # fmt: skip


@dataclass(frozen=True)
class Cost:
    """Busy cycles of one execution, its events, and the crossbars it keeps busy."""

    cycles: int
    events: dict[str, int] = field(default_factory=dict)
    crossbars: tuple[int, ...] = ()


def _cycles(amount: float) -> int:
    return max(1, math.ceil(amount))


def energy_pj(events: Mapping[str, int], target: Target) -> dict[str, float]:
    """Energy by component, pJ, of the events counted (names as EVENTS; absent: 0)."""
    e, energy = events, target.energy

    def n(name: str) -> int:
        return e.get(name, 0)

    return {
        "mvm": n("crossbar_steps") * energy.mvm_per_crossbar_step,
        "adc": n("adc_conversions") * energy.adc_per_conversion,
        "vector": (n("vector_elements") + n("requant_elements")) * energy.vector_per_element,
        "local": n("local_bytes") * energy.local_per_byte,
        "global": n("global_bytes") * energy.global_per_byte,
        "network": n("hop_bytes") * energy.network_per_byte_hop,
        "scalar": n("scalar_ops") * energy.scalar,
        # the cells written, and their bytes leaving off-chip memory
        "program": (n("programmed_cells") * energy.program_per_cell
                    + n("programmed_bytes") * energy.global_per_byte),
    }


def instruction_cost(
    spec: InstructionSpec,
    operands: tuple[int, ...],
    target: Target,
    groups: dict[int, CrossbarGroup],
    core: int,
) -> Cost:
    """What one execution of the instruction costs on `core` of `target`."""
    f = dict(zip((fld.name for fld in spec.fields), operands, strict=True))
    lat = target.latency
    size = ELEMENT_BYTES.get(spec.suffix or "", 1)
    name = base_name(spec.mnemonic)
    if spec.cost in ("scalar", "sync"):
        return Cost(lat.scalar, {"scalar_ops": 1})
    if spec.cost == "mvm":
        group = groups[f["g"]]
        steps = input_steps(INPUT_BITS, target.dac_bits)
        xbars = group.crossbars()
        out_bytes = 4 * group.cols_used * (2 if name == "mvm.acc" else 1)
        return Cost(steps * lat.mvm, {
            "mvm_instructions": 1,
            "crossbar_activations": len(xbars),
            "crossbar_steps": steps * len(xbars),
            "adc_conversions": steps * len(group.slices) * group.cols_used,
            "local_bytes": group.rows_used + out_bytes,
        }, xbars)  # fmt: skip
    if spec.cost == "requant":
        n = f["n"]
        traffic = 4 * n + 20 * n + size * n  # accumulators, table entries, results
        return Cost(_cycles(n * lat.requant_per_element),
                    {"requant_elements": n, "local_bytes": traffic})
    if spec.cost == "vector":
        n = f["n"]
        if name in _VECTOR_TRAFFIC:
            elements, traffic = n, _VECTOR_TRAFFIC[name] * size * n
        elif name == "vscale":
            elements, traffic = n, size * n + 4 * n
        elif name == "vlut":
            elements, traffic = n, 3 * n
        elif name == "vgather":  # an i32 index, the byte it reads, the byte it writes
            elements, traffic = n, 6 * n
        else:  # vredmax / vredsum
            elements = n * f["count"]
            traffic = size * elements + (4 if name == "vredsum" else size) * n
        return Cost(_cycles(elements * lat.vector_per_element),
                    {"vector_elements": elements, "local_bytes": traffic})
    if spec.cost == "copy":
        nbytes = f["len"] * f.get("reps", 1)
        moved = 2 * nbytes if name == "copy" else nbytes
        return Cost(_cycles(nbytes * lat.copy_per_byte), {"local_bytes": moved})
    if spec.cost == "global":
        nbytes = f["len"]
        return Cost(_cycles(nbytes / target.global_bytes_per_cycle),
                    {"global_bytes": nbytes, "local_bytes": nbytes})
    if spec.cost == "program":
        group = groups[f["g"]]
        transfer, write = program_cycles(group, target)
        return Cost(transfer + write, {"programmed_cells": group.cells,
                                       "programmed_bytes": group.stored_bytes(target.cell_bits)})
    if spec.cost == "send":
        nbytes = f["len"]
        hops = target.hops(core, f["core"])
        return Cost(max(1, lat.send_setup), {
            "local_bytes": nbytes, "network_bytes": nbytes, "hop_bytes": nbytes * hops})
    if spec.cost == "recv":
        return Cost(max(1, lat.recv_setup), {"local_bytes": f["len"]})
    raise ValueError(f"{spec.mnemonic}: unknown cost class {spec.cost!r}")
