"""Errors and warnings that reach the user.

Every failure a user can cause (bad model, bad target, bad assembly, bad
option) is raised as a CimcError. The command line prints its message as one
line (or a located block with the source line and a caret) and exits non-zero,
never with a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a text file, 1-based, for file:line:col messages."""

    file: str
    line: int
    column: int = 0

    def __str__(self) -> str:
        if self.column:
            return f"{self.file}:{self.line}:{self.column}"
        return f"{self.file}:{self.line}"


class CimcError(Exception):
    """An error caused by user input; its message says what is wrong and what to do."""

    def __init__(self, message: str, location: Location | None = None, source_line: str = ""):
        super().__init__(message)
        self.message = message
        self.location = location
        self.source_line = source_line

    def __str__(self) -> str:
        head = f"error: {self.message}"
        if self.location:
            head = f"{self.location}: {head}"
        if self.location and self.source_line:
            caret = " " * max(self.location.column - 1, 0) + "^"
            return f"{head}\n{self.source_line.rstrip()}\n{caret}"
        return head


def located_error(
    message: str, file: str, text: str, line: int, column: int = 0
) -> CimcError:
    """A CimcError pointing at `line`/`column` of `text`, quoting the source line."""
    lines = text.splitlines()
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    return CimcError(message, Location(file, line, column), source)


def warn(message: str) -> None:
    """Print a warning to stderr; warnings never stop compilation."""
    end_progress()
    print(f"cimc: warning: {message}", file=sys.stderr)


class _Progress:
    """The one status line a long command keeps on a terminal's stderr."""

    enabled = False
    shown = False


def show_progress(enabled: bool) -> None:
    """Turn the status line on (a command on a terminal without --quiet) or off."""
    _Progress.enabled = enabled


def showing_progress() -> bool:
    """Whether the status line is on (to skip working out what it would show)."""
    return _Progress.enabled


def progress(stage: str) -> None:
    """Replace the status line with `stage` (nothing unless turned on)."""
    if _Progress.enabled:
        sys.stderr.write(f"\r\033[Kcimc: {stage}")
        sys.stderr.flush()
        _Progress.shown = True


def end_progress() -> None:
    """Clear the status line, before other output or at the end."""
    if _Progress.shown:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
        _Progress.shown = False
