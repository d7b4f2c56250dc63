"""The loaded target description: frozen dataclasses plus derived figures.

Attribute names equal the schema's key names (targets/schema.py); the
[latency] and [energy] sections are nested: `target.latency.mvm`,
`target.energy.adc_per_conversion`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    """Instruction latencies in cycles of the target clock."""

    mvm: int  # one input bit step of an MVM
    vector_per_element: float
    copy_per_byte: float
    scalar: int
    requant_per_element: float
    send_setup: int
    recv_setup: int
    program_per_row: float  # writing one crossbar row (wprog)


@dataclass(frozen=True)
class Energy:
    """Energies in pJ per event."""

    mvm_per_crossbar_step: float
    adc_per_conversion: float
    vector_per_element: float
    local_per_byte: float
    global_per_byte: float
    network_per_byte_hop: float
    scalar: float
    program_per_cell: float  # writing one crossbar cell (wprog)


@dataclass(frozen=True)
class Target:
    """A CIM chip: mesh of tiles -> cores -> crossbars, with its costs."""

    name: str
    description: str
    clock_mhz: float
    mesh_x: int
    mesh_y: int
    cores_per_tile: int
    cores: int
    global_memory_bytes: int
    global_bytes_per_cycle: float
    weight_bytes_per_cycle: float  # off-chip weight store -> crossbars (wprog), chip-wide
    hop_latency: int
    link_bytes_per_cycle: float
    crossbars_per_core: int
    local_memory_bytes: int
    rows: int
    cols: int
    cell_bits: int
    dac_bits: int
    adc_bits: int
    reprogrammable: bool  # crossbar cells can be rewritten after manufacture (wprog)
    weight_bits: int
    activation_bits: int
    activation_signed: bool
    latency: Latency
    energy: Energy
    source: str = ""  # the file it was loaded from

    @property
    def tiles(self) -> int:
        """Tiles that hold at least one core."""
        return -(-self.cores // self.cores_per_tile)

    @property
    def slices(self) -> int:
        """Crossbar columns (slices) one weight occupies: ceil(weight_bits / cell_bits)."""
        return -(-self.weight_bits // self.cell_bits)

    @property
    def input_steps(self) -> int:
        """Bit-serial steps of one MVM: ceil(activation_bits / dac_bits)."""
        return -(-self.activation_bits // self.dac_bits)

    @property
    def mvm_cycles(self) -> int:
        """Cycles of one full MVM on one crossbar."""
        return self.input_steps * self.latency.mvm

    @property
    def total_crossbars(self) -> int:
        return self.cores * self.crossbars_per_core

    @property
    def weight_capacity(self) -> int:
        """How many weight_bits-bit weights all crossbars hold together."""
        return self.total_crossbars * self.rows * self.cols // self.slices

    @property
    def peak_mvms_per_second(self) -> float:
        """Full crossbar MVMs per second with every crossbar busy."""
        return self.total_crossbars * self.clock_mhz * 1e6 / self.mvm_cycles

    @property
    def peak_macs_per_second(self) -> float:
        """Weight multiply-accumulates per second with every crossbar busy."""
        return self.peak_mvms_per_second * self.rows * self.cols / self.slices

    def tile_of(self, core: int) -> tuple[int, int]:
        """Mesh position (x, y) of the tile holding `core`."""
        tile = core // self.cores_per_tile
        return tile % self.mesh_x, tile // self.mesh_x

    def hops(self, core_a: int, core_b: int) -> int:
        """Mesh links between two cores under XY routing (0 within a tile)."""
        ax, ay = self.tile_of(core_a)
        bx, by = self.tile_of(core_b)
        return abs(ax - bx) + abs(ay - by)
