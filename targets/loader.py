"""Loading a target description: a bundled name or a path to a .toml file."""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from cimc.diagnostics import CimcError, located_error
from cimc.targets.schema import SCHEMA, keys_of
from cimc.targets.target import Energy, Latency, Target
from cimc.targets.validate import TargetError, check_keys, check_target

BUNDLED = Path(__file__).resolve().parent


def list_targets() -> list[str]:
    """Names of the bundled targets, sorted."""
    return sorted(path.stem for path in BUNDLED.glob("*.toml"))


def is_target_name(reference: str) -> bool:
    """Whether a `--target` or `.target` reference is a bundled target's name rather
    than a file path (which ends in .toml or has a directory part)."""
    return not (reference.endswith(".toml") or "/" in reference or "\\" in reference)


def target_reference(target: Target, program: str | Path) -> str:
    """How the `.target` directive of a program written at `program` names `target`:
    a bundled target by its name, a target file by its path relative to the
    program's directory (so the program simulates wherever it is run from)."""
    source = Path(target.source) if target.source else None
    if source is None or (source.resolve().parent == BUNDLED
                          and source.stem in list_targets()):
        return source.stem if source is not None else target.name
    relative = Path(os.path.relpath(source.resolve(), Path(program).resolve().parent))
    text = relative.as_posix()
    return text if not is_target_name(text) else f"./{text}"


def program_target(reference: str, program: str | Path) -> Target:
    """The target a program at `program` names in its `.target` directive: a bundled
    name, or a file path relative to the program's directory."""
    if is_target_name(reference):
        return load_target(reference)
    path = Path(program).parent / reference
    if not path.is_file():
        raise CimcError(f"target file {path} (the .target directive of {program}, relative to "
                        "the program) not found; put the target file back, or give "
                        "--target NAME|FILE")
    return load_target(str(path))


def target_path(name_or_path: str) -> Path:
    """The file a target name or path refers to."""
    if not is_target_name(name_or_path) or Path(name_or_path).is_file():
        path = Path(name_or_path)
        if not path.is_file():
            raise CimcError(f"target file {name_or_path} not found")
        return path
    if name_or_path in list_targets():
        return BUNDLED / f"{name_or_path}.toml"
    close = difflib.get_close_matches(name_or_path, list_targets(), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise CimcError(f"unknown target '{name_or_path}'; {hint}bundled targets are "
                    f"{', '.join(list_targets())}, or give the path of a .toml file")


def load_target(name_or_path: str) -> Target:
    """Load and validate a target; a CimcError lists every problem with file, line and key."""
    path = target_path(name_or_path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CimcError(f"cannot read target file {file}: {exc}") from None
    return _parsed(text, file)


@functools.lru_cache(maxsize=16)
def _parsed(text: str, file: str) -> Target:
    """parse_target, once per text and file: a Target is frozen, so every pass and
    command that loads the same file shares one, validated once."""
    return parse_target(text, file)


_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse_target(text: str, file: str) -> Target:
    """Parse and validate the text of a target file named `file`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _POSITION.search(message)
        if position:
            reason = message[: position.start()]
            raise located_error(f"TOML syntax: {reason}", file, text, int(position.group(1)),
                                int(position.group(2))) from None
        line = len(text.splitlines()) or 1
        raise located_error(f"TOML syntax: {message}", file, text, line) from None
    values, problems = check_keys(data, text)
    if problems:
        raise TargetError(file, text, problems)
    target = build_target(values, default_name=Path(file).stem, source=file)
    problems = check_target(target, text)
    if problems:
        raise TargetError(file, text, problems)
    return target


def build_target(values: dict[str, Any], default_name: str, source: str = "") -> Target:
    """A Target from checked values by key path, filling in defaults."""
    resolved: dict[str, Any] = {}
    for key in SCHEMA:
        resolved[key.path] = values.get(key.path, key.default)
    if resolved["name"] is None:
        resolved["name"] = default_name
    if resolved["chip.cores"] is None:
        resolved["chip.cores"] = (resolved["chip.mesh_x"] * resolved["chip.mesh_y"]
                                  * resolved["chip.cores_per_tile"])
    if resolved["chip.weight_bytes_per_cycle"] is None:
        resolved["chip.weight_bytes_per_cycle"] = resolved["chip.global_bytes_per_cycle"]
    flat = {key.name: resolved[key.path] for key in SCHEMA
            if key.section not in ("latency", "energy")}
    latency = Latency(**{key.name: resolved[key.path] for key in keys_of("latency")})
    energy = Energy(**{key.name: resolved[key.path] for key in keys_of("energy")})
    return Target(**flat, latency=latency, energy=energy, source=source)
