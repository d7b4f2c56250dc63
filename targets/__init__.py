"""Target descriptions: CIM chips described as TOML data, with schema and loader.

    from cimc.targets import load_target
    target = load_target("isaac")        # a bundled name, or a path to a .toml file
    target.rows, target.latency.mvm, target.energy.adc_per_conversion

The keys, units, ranges and defaults are in targets/schema.py and docs/targets.md.
"""

from cimc.targets.loader import (
    is_target_name,
    list_targets,
    load_target,
    parse_target,
    program_target,
    target_path,
    target_reference,
)
from cimc.targets.target import Energy, Latency, Target
from cimc.targets.validate import Problem, TargetError, exact_adc_bits, target_warnings

__all__ = [
    "Energy",
    "Latency",
    "Problem",
    "Target",
    "TargetError",
    "is_target_name",
    "list_targets",
    "load_target",
    "parse_target",
    "program_target",
    "target_path",
    "target_reference",
    "target_warnings",
    "exact_adc_bits",
]
