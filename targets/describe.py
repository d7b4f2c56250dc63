"""Writing a loaded target back out: resolved TOML and a derived summary."""

from __future__ import annotations

from cimc.targets.schema import SCHEMA, SECTIONS, Key, format_value
from cimc.targets.target import Target


def value_of(target: Target, key: Key) -> object:
    """The resolved value of a schema key on a target."""
    holder: object = target
    if key.section in ("latency", "energy"):
        holder = getattr(target, key.section)
    return getattr(holder, key.name)


def to_toml(target: Target) -> str:
    """The target with every default filled in, as a TOML file that loads back equal."""
    lines: list[str] = []
    for section in SECTIONS:
        if section:
            lines += ["", f"[{section}]"]
        for key in (key for key in SCHEMA if key.section == section):
            assignment = f"{key.name} = {format_value(value_of(target, key))}"
            unit = f"{key.unit}: " if key.unit else ""
            lines.append(f"{assignment:<40} # {unit}{key.meaning}")
    return "\n".join(lines) + "\n"


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count:,} bytes ({count / size:.1f} {unit})"
    return f"{count:,} bytes"


def summary(target: Target) -> list[tuple[str, str]]:
    """Derived figures an architect compares targets by, as (label, value) rows."""
    used_tiles = f"{target.tiles} of {target.mesh_x}x{target.mesh_y} tiles"
    return [
        ("hierarchy", f"{used_tiles} x {target.cores_per_tile} cores x "
                      f"{target.crossbars_per_core} crossbars of {target.rows}x{target.cols}"),
        ("cores", f"{target.cores:,}"),
        ("total crossbars", f"{target.total_crossbars:,}"),
        ("weight slices", f"{target.slices} columns of {target.cell_bits}-bit cells per "
                          f"{target.weight_bits}-bit weight"),
        ("weight capacity", f"{target.weight_capacity:,} weights of {target.weight_bits} bits"
                            + (f" = {_bytes(target.weight_capacity)}"
                               if target.weight_bits == 8 else "")),
        ("MVM time", f"{target.input_steps} steps x {target.latency.mvm} cycles = "
                     f"{target.mvm_cycles} cycles ({target.mvm_cycles / target.clock_mhz:g} us)"),
        ("peak MVMs/s", f"{target.peak_mvms_per_second:.3g} (all crossbars busy)"),
        ("peak MACs/s", f"{target.peak_macs_per_second:.3g}"),
        ("local memory", f"{_bytes(target.local_memory_bytes)} per core"),
    ]


def summary_text(target: Target) -> str:
    """The summary as aligned `label: value` lines."""
    rows = summary(target)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label + ':':<{width + 1}} {value}" for label, value in rows) + "\n"
