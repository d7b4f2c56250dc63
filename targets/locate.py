"""Finding the line of a key in TOML text (tomllib reports no positions).

Handles the forms target files use: `[section]` headers followed by
`key = value`, and dotted keys `section.key = value` at top level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_\-\"'. ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_\-\"'. ]+?)\s*=\s*(\S?)")


@dataclass(frozen=True)
class Place:
    """1-based line and columns of a key and of its value."""

    line: int
    key_column: int
    value_column: int


def _bare(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def locate(text: str, section: str, name: str = "") -> Place | None:
    """Where `section.name` is written (or the `[section]` header if name is "")."""
    current = ""
    want = f"{section}.{name}" if section and name else section or name
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            current = _bare(header.group(1))
            if not name and current == section:
                column = line.index("[") + 1
                return Place(number, column, column)
            continue
        match = _KEY.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        key = _bare(match.group(2))
        full = f"{current}.{key}" if current else key
        if full == want or (not name and full.startswith(section + ".")):
            key_column = len(match.group(1)) + 1
            return Place(number, key_column, match.start(3) + 1)
    return None
