"""Checking a parsed target description against the schema and across keys.

Every problem is collected with its key path and line, and all are reported
in one TargetError, so an author fixes a file in one round.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from cimc.diagnostics import CimcError, Location
from cimc.targets.locate import Place, locate
from cimc.targets.schema import SCHEMA, SECTIONS, Key, format_value, keys_of
from cimc.targets.target import Target


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a target file."""

    path: str  # key path, e.g. "crossbar.cell_bits"
    message: str  # what is wrong and what is allowed, without the path
    place: Place | None
    suggests: str = ""  # for an unknown key: the key path it probably meant

    @property
    def line(self) -> int:
        return self.place.line if self.place else 0


class TargetError(CimcError):
    """All problems of one target file, each with file:line and key path."""

    def __init__(self, file: str, text: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        if len(problems) == 1:
            problem = problems[0]
            message = f"{problem.path}: {problem.message}"
            if problem.place is None:
                super().__init__(f"{file}: {message}")
                return
            lines = text.splitlines()
            source = lines[problem.line - 1] if problem.line <= len(lines) else ""
            column = problem.place.value_column
            super().__init__(message, Location(file, problem.line, column), source)
            return
        items = [f"\n  {_where(file, p)}: {p.path}: {p.message}" for p in problems]
        head = f"{file}: {len(problems)} problems in the target description:"
        super().__init__(head + "".join(items))


def _where(file: str, problem: Problem) -> str:
    return f"{file}:{problem.line}" if problem.place else file


_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table",
          list: "array"}


def _describe(value: Any) -> str:
    kind = next((name for kind, name in _KINDS.items() if isinstance(value, kind)), "date/time")
    if isinstance(value, dict | list):
        return f"a {kind}"
    shown = format_value(value) if kind != "date/time" else str(value)
    return f"{kind} {shown}"


def _at_key(place: Place | None) -> Place | None:
    """The place with its caret on the key rather than the value."""
    return Place(place.line, place.key_column, place.key_column) if place else None


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else ""


def _check_value(key: Key, value: Any, text: str) -> tuple[Any, Problem | None]:
    """The value converted to the key's type, or a problem (located in `text` only then:
    locating every key took most of the time of loading a target)."""
    unit = f" {key.unit}" if key.unit else ""
    ok_type = isinstance(value, key.type) and (key.type is bool or not isinstance(value, bool))
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok_type = float(value), True
    if not ok_type:
        return None, Problem(key.path, f"expected {key.range_text()}{unit}, got {_describe(value)}",
                             locate(text, key.section, key.name))
    if key.low is not None and key.high is not None and not key.low <= value <= key.high:
        return None, Problem(key.path, f"{format_value(value)} is out of range; allowed: "
                             f"{key.range_text()}{unit}", locate(text, key.section, key.name))
    return value, None


def _record(key: Key, value: Any, text: str, values: dict[str, Any],
            problems: list[Problem]) -> None:
    checked, problem = _check_value(key, value, text)
    if problem:
        problems.append(problem)
    else:
        values[key.path] = checked


def check_keys(data: dict[str, Any], text: str) -> tuple[dict[str, Any], list[Problem]]:
    """Per-key checks: known sections and keys, types, ranges, required keys.

    Returns the given values by key path (converted to their schema type) and
    the problems found.
    """
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    sections = [name for name in SECTIONS if name]
    top_names = [key.name for key in keys_of("")]
    for name, value in data.items():
        if name in sections:
            if not isinstance(value, dict):
                problems.append(Problem(name, f"must be a table [{name}], got {_describe(value)}",
                                        locate(text, "", name)))
                continue
            _check_section(name, value, text, values, problems)
        elif name in top_names:
            key = next(key for key in SCHEMA if key.path == name)
            _record(key, value, text, values, problems)
        else:
            close = _closest(name, top_names + sections)
            hint = f"did you mean '{close}'? " if close else ""
            problems.append(Problem(name, f"unknown top-level key or section; {hint}sections are "
                                    + ", ".join(f"[{s}]" for s in sections),
                                    _at_key(locate(text, name) or locate(text, "", name)), close))
    problems += _missing(data, text, values, problems)
    problems.sort(key=lambda problem: (problem.line == 0, problem.line))
    return values, problems


def _missing(data: dict[str, Any], text: str, values: dict[str, Any],
             problems: list[Problem]) -> list[Problem]:
    """Required keys not given (and not already explained by another problem)."""
    missing: list[Problem] = []
    absent_sections: set[str] = set()
    for key in SCHEMA:
        if not key.required or key.path in values or _reported(key, problems):
            continue
        if key.section and key.section not in data:
            if key.section not in absent_sections:
                absent_sections.add(key.section)
                needed = [k.name for k in keys_of(key.section) if k.required]
                missing.append(Problem(key.section, f"missing section [{key.section}]; it needs "
                                       f"{', '.join(needed)} ({SECTIONS[key.section]})", None))
            continue
        where = f"under [{key.section}]" if key.section else "at the top of the file"
        place = locate(text, key.section) if key.section else None
        missing.append(Problem(key.path, f"missing required key; add `{key.name} = "
                               f"<{key.range_text()}>` {where} ({key.meaning})", place))
    return missing


def _reported(key: Key, problems: list[Problem]) -> bool:
    """Whether another problem (a misspelling, a bad section) already explains the absence."""
    explained = {key.path, key.section} if key.section else {key.path}
    return any(explained & {problem.path, problem.suggests} for problem in problems)


def _check_section(section: str, table: dict[str, Any], text: str, values: dict[str, Any],
                   problems: list[Problem]) -> None:
    names = [key.name for key in keys_of(section)]
    for name, value in table.items():
        if name in names:
            key = keys_of(section)[names.index(name)]
            _record(key, value, text, values, problems)
            continue
        elsewhere = [key for key in SCHEMA if key.name == name and key.section]
        if elsewhere:
            meant = elsewhere[0].path
            hint = f"'{name}' belongs in [{elsewhere[0].section}]; "
        else:
            close = _closest(name, names)
            meant = f"{section}.{close}" if close else ""
            hint = f"did you mean '{close}'? " if close else ""
        place = _at_key(locate(text, section, name))
        problems.append(Problem(f"{section}.{name}", f"unknown key in [{section}]; {hint}keys of "
                                f"[{section}] are {', '.join(names)}", place, meant))


def check_target(target: Target, text: str) -> list[Problem]:
    """Checks that relate several keys of an otherwise valid target."""
    problems = []
    capacity = target.mesh_x * target.mesh_y * target.cores_per_tile
    if target.cores > capacity:
        problems.append(Problem("chip.cores", f"{target.cores} cores do not fit the mesh: "
                                f"mesh_x * mesh_y * cores_per_tile = {capacity}; lower cores or "
                                "enlarge the mesh", locate(text, "chip", "cores")))
    if target.cell_bits > target.weight_bits:
        problems.append(Problem("crossbar.cell_bits", f"{target.cell_bits}-bit cells exceed "
                                f"precision.weight_bits = {target.weight_bits}; use cell_bits <= "
                                "weight_bits", locate(text, "crossbar", "cell_bits")))
    vectors = target.rows + 4 * target.cols
    if target.local_memory_bytes < vectors:
        problems.append(Problem("core.local_memory_bytes", f"{target.local_memory_bytes} bytes "
                                f"cannot hold one crossbar's input ({target.rows} bytes) and int32 "
                                f"output ({4 * target.cols} bytes); give at least {vectors}",
                                locate(text, "core", "local_memory_bytes")))
    if target.global_memory_bytes < vectors:
        problems.append(Problem("chip.global_memory_bytes", f"{target.global_memory_bytes} bytes "
                                f"cannot hold one crossbar's input and output; give at least "
                                f"{vectors}", locate(text, "chip", "global_memory_bytes")))
    if target.slices > target.crossbars_per_core * target.cols:
        problems.append(Problem("crossbar.cols", f"a {target.weight_bits}-bit weight needs "
                                f"{target.slices} columns of {target.cell_bits}-bit cells but a "
                                f"core has only {target.crossbars_per_core * target.cols}",
                                locate(text, "crossbar", "cols")))
    return problems


def exact_adc_bits(target: Target) -> tuple[int, int]:
    """(bits, largest value) of the largest partial sum one ADC conversion digitizes: all
    rows at the largest DAC step times the largest cell level."""
    largest = target.rows * (2**target.dac_bits - 1) * (2**target.cell_bits - 1)
    return largest.bit_length(), largest


def target_warnings(target: Target) -> list[str]:
    """Things that are allowed but worth knowing about a target."""
    notes = []
    needed, largest = exact_adc_bits(target)
    if target.adc_bits < needed:
        notes.append(f"crossbar.adc_bits = {target.adc_bits} is below the {needed} bits an exact "
                     f"partial sum needs ({target.rows} rows x {target.dac_bits}-bit inputs x "
                     f"{target.cell_bits}-bit cells, up to {largest}); results stay exact with the "
                     "ideal ADC and clip only in the simulator's finite-ADC what-if")
    if target.activation_bits > 8:
        notes.append(f"precision.activation_bits = {target.activation_bits}: the ISA's mvm reads "
                     "8-bit input elements, so the compiler uses 8")
    return notes
