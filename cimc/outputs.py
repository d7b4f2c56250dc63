"""Writing output files all-or-nothing, so a failed command leaves no partial file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cimc.diagnostics import CimcError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | Path) -> None:
    """Fail early, naming `path`, when it could not be written (so that a command
    checks all its outputs before it writes any of them)."""
    path = Path(path)
    if path.is_dir():
        raise CimcError(f"cannot write {path}: it is a directory")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CimcError(f"cannot write {path}: {blocker} is a file, not a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK):
        raise CimcError(f"cannot write {path}: {existing} is not writable")


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write `content` to `path` via a temporary file renamed into place.

    A file system problem (missing or read-only directory, a directory in the
    way) is a CimcError naming `path`.
    """
    path = Path(path)
    mode = "w" if isinstance(content, str) else "wb"
    tmp = None
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CimcError(f"cannot write {path}: {blocker} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            handle.write(content)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        raise CimcError(f"cannot write {path}: {reason}; check that the directory exists "
                        "and is writable and that the path is not a directory") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
