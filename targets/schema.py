"""The target-description schema: one row per TOML key.

This table is the single source for validation (types, ranges, defaults,
required keys) and for the key table of docs/targets.md (cimc.targets.docgen).
A key's TOML path is `section.name`; top-level keys have section "".
The loaded value lands on `Target.<name>`, except for the [latency] and
[energy] sections, which land on `Target.latency.<name>` and
`Target.energy.<name>`.
"""

from __future__ import annotations

from dataclasses import dataclass


class Required:
    """Marker default of a key the file must give."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = Required()


@dataclass(frozen=True)
class Key:
    """One key of a target description."""

    section: str
    name: str
    type: type  # int, float, bool or str
    unit: str
    low: float | None
    high: float | None
    default: object  # a value, REQUIRED, or None when `derived` says how it is computed
    meaning: str
    derived: str = ""

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def range_text(self) -> str:
        """The allowed values in words, e.g. `integer 1..8`."""
        kind = {int: "integer", float: "number", bool: "true or false", str: "string"}[self.type]
        if self.low is None and self.high is None:
            return kind
        low = "" if self.low is None else _number(self.low)
        high = "" if self.high is None else _number(self.high)
        return f"{kind} {low}..{high}"

    def default_text(self) -> str:
        if self.required:
            return "required"
        if self.derived:
            return self.derived
        return format_value(self.default)


def _number(value: float) -> str:
    if not float(value).is_integer():
        return repr(value)
    whole = int(value)
    if whole >= 2**20 and whole & (whole - 1) == 0:
        return f"2^{whole.bit_length() - 1}"
    if whole >= 10**6 and str(whole).rstrip("0") == "1":
        return f"10^{len(str(whole)) - 1}"
    return str(whole)


def format_value(value: object) -> str:
    """A value written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)  # keeps the ".0" so a float key reads as a number
    return str(value)


# Section name -> one-line meaning, in file order.
SECTIONS: dict[str, str] = {
    "": "identity of the target",
    "chip": "the chip: clock, mesh of tiles, cores, global memory",
    "network": "the on-chip mesh network between tiles",
    "core": "one core: its crossbars and local memory",
    "crossbar": "one crossbar array and its converters",
    "precision": "number formats of weights and activations",
    "latency": "instruction latencies (fractional per-element costs allowed)",
    "energy": "energy per event",
}

_BIG = 2**48

SCHEMA: tuple[Key, ...] = (
    Key("", "name", str, "", None, None, None, "short name shown in reports",
        derived="file name without .toml"),
    Key("", "description", str, "", None, None, REQUIRED,
        "one line saying what chip this models and where its numbers come from"),
    Key("chip", "clock_mhz", float, "MHz", 1, 100_000, 1000.0,
        "clock frequency; every latency below counts cycles of this clock"),
    Key("chip", "mesh_x", int, "tiles", 1, 256, REQUIRED, "tiles per mesh row"),
    Key("chip", "mesh_y", int, "tiles", 1, 256, REQUIRED, "tile rows in the mesh"),
    Key("chip", "cores_per_tile", int, "cores", 1, 1024, REQUIRED, "cores in one tile"),
    Key("chip", "cores", int, "cores", 1, 2**24, None,
        "cores actually present, numbered row-major over the mesh",
        derived="mesh_x * mesh_y * cores_per_tile"),
    Key("chip", "global_memory_bytes", int, "bytes", 1, _BIG, 64 * 2**20,
        "global (off-chip) memory holding inputs and outputs"),
    Key("chip", "global_bytes_per_cycle", float, "bytes/cycle", 0.001, 65536, 16.0,
        "bandwidth of ld/st between global memory and the cores, shared by all cores"),
    Key("chip", "weight_bytes_per_cycle", float, "bytes/cycle", 0.001, 65536, None,
        "bandwidth from the off-chip weight store into the crossbars (wprog), one channel "
        "shared by all cores", derived="global_bytes_per_cycle"),
    Key("network", "hop_latency", int, "cycles", 0, 100_000, 2,
        "cycles for a message to cross one tile-to-tile link"),
    Key("network", "link_bytes_per_cycle", float, "bytes/cycle", 0.001, 65536, 8.0,
        "bandwidth of one mesh link"),
    Key("core", "crossbars_per_core", int, "crossbars", 1, 65536, REQUIRED,
        "crossbar arrays in one core"),
    Key("core", "local_memory_bytes", int, "bytes", 1, _BIG, 65536,
        "byte-addressed local memory of one core"),
    Key("crossbar", "rows", int, "cells", 1, 65536, REQUIRED,
        "word lines: input elements of one MVM"),
    Key("crossbar", "cols", int, "cells", 1, 65536, REQUIRED,
        "bit lines: cell columns of one crossbar"),
    Key("crossbar", "cell_bits", int, "bits", 1, 8, REQUIRED, "bits stored in one cell"),
    Key("crossbar", "dac_bits", int, "bits", 1, 16, 1,
        "input bits applied per step (inputs stream bit-serially)"),
    Key("crossbar", "adc_bits", int, "bits", 1, 32, 8,
        "ADC resolution (the simulator's finite-ADC what-if clips to it)"),
    Key("crossbar", "reprogrammable", bool, "", None, None, True,
        "cells can be rewritten after manufacture (wprog); false: the model must fit the "
        "chip in one phase"),
    Key("precision", "weight_bits", int, "bits", 1, 16, 8, "bits of a signed weight"),
    Key("precision", "activation_bits", int, "bits", 1, 16, 8, "bits of an MVM input element"),
    Key("precision", "activation_signed", bool, "", None, None, True,
        "MVM inputs are int8 (true) or uint8 (false)"),
    Key("latency", "mvm", int, "cycles", 1, 10**9, 100,
        "one input bit step of an MVM; a b-bit MVM takes ceil(b / dac_bits) steps"),
    Key("latency", "vector_per_element", float, "cycles", 0, 10**6, 0.25,
        "vector arithmetic, per element"),
    Key("latency", "copy_per_byte", float, "cycles", 0, 10**6, 0.125,
        "copy/fill inside local memory, per byte"),
    Key("latency", "scalar", int, "cycles", 0, 10**6, 1, "scalar and control instructions"),
    Key("latency", "requant_per_element", float, "cycles", 0, 10**6, 0.5,
        "requant and vlut, per element"),
    Key("latency", "send_setup", int, "cycles", 0, 10**9, 10,
        "fixed cost of a send before its bytes move"),
    Key("latency", "recv_setup", int, "cycles", 0, 10**9, 10,
        "fixed cost of a recv once its message has arrived"),
    Key("latency", "program_per_row", float, "cycles", 0, 10**9, 1000.0,
        "writing one crossbar row of cells (wprog); the columns and slices of a row are "
        "written together"),
    Key("energy", "mvm_per_crossbar_step", float, "pJ", 0, 10**9, 10.0,
        "one crossbar for one input bit step (DACs and array read)"),
    Key("energy", "adc_per_conversion", float, "pJ", 0, 10**9, 1.0,
        "one ADC conversion (one column, one slice, one step)"),
    Key("energy", "vector_per_element", float, "pJ", 0, 10**9, 0.5,
        "vector arithmetic, requant or lookup, per element"),
    Key("energy", "local_per_byte", float, "pJ", 0, 10**9, 1.0,
        "local memory read or write, per byte"),
    Key("energy", "global_per_byte", float, "pJ", 0, 10**9, 100.0,
        "global memory access (ld/st), per byte"),
    Key("energy", "network_per_byte_hop", float, "pJ", 0, 10**9, 4.0,
        "moving one byte across one mesh link"),
    Key("energy", "scalar", float, "pJ", 0, 10**9, 1.0, "one scalar or control instruction"),
    Key("energy", "program_per_cell", float, "pJ", 0, 10**9, 10.0,
        "writing one crossbar cell (wprog; its bytes also pay global_per_byte)"),
)


def keys_of(section: str) -> list[Key]:
    """The keys of one section, in schema order."""
    return [key for key in SCHEMA if key.section == section]
