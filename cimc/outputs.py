"""Writing a command's output files all together or not at all.

A command names its inputs and outputs up front in an `OutputSet`: an output
that is the same file as an input or another output (also through a symlink
or a hard link), or that cannot be written, is an error before any work.
Contents are staged in hidden temporary files beside their destinations and
renamed into place together by `commit`; a failure, an exception or a signal
(`abort_on_signals`: SIGTERM, SIGHUP, SIGINT) before that removes them, so
nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from cimc.diagnostics import CimcError

# Signals that abort a command cleanly: staged files removed, exit 128 + signal number.
ABORT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

# Output sets with staged files, which an aborting signal removes. Process-wide,
# like signals; the lock keeps an abort from interleaving with a stage or a commit.
_ACTIVE: list[OutputSet] = []
_LOCK = threading.Lock()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | Path) -> None:
    """Fail early, naming `path`, when it could not be written (so that a command
    checks all its outputs before it writes any of them).

    The check creates and removes a temporary file in the nearest existing
    directory: permission bits do not tell (root passes every access check,
    yet cannot create files in /proc).
    """
    path = Path(path)
    if path.is_dir():
        raise CimcError(f"cannot write {path}: it is a directory")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CimcError(f"cannot write {path}: {blocker} is a file, not a directory")
    directory = next(p for p in path.parents if p.exists())
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".cimc-probe-"):
            pass
    except OSError as exc:
        raise CimcError(f"cannot write {path}: {directory} does not take new files "
                        f"({exc.strerror or exc}); choose a writable place") from None


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same inode when both exist, else the
    same resolved path (symlinks followed)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


class OutputSet:
    """The files one command writes, staged and then committed together.

    `outputs` and `inputs` map what the user calls a file (an option such as
    "--report", or "MODEL.onnx") to its path; None entries are skipped.
    """

    def __init__(self, outputs: dict[str, str | Path | None],
                 inputs: dict[str, str | Path | None] | None = None) -> None:
        self.outputs = {label: Path(p) for label, p in outputs.items() if p}
        named_inputs = {label: Path(p) for label, p in (inputs or {}).items() if p}
        seen: list[tuple[str, Path]] = []
        for label, path in self.outputs.items():
            for other, other_path in named_inputs.items():
                if _same_file(path, other_path):
                    raise CimcError(f"{label} {path} is the same file as the input {other} "
                                    f"{other_path}; writing it would destroy the input: "
                                    "choose another output path")
            for other, other_path in seen:
                if _same_file(path, other_path):
                    raise CimcError(f"{label} {path} and {other} {other_path} are the same "
                                    "file; give each output its own path")
            seen.append((label, path))
        for path in self.outputs.values():
            check_writable(path)
        self._staged: dict[Path, Path] = {}  # destination -> its temporary file
        self._made: list[Path] = []  # directories made for staging, removed unless committed

    def __enter__(self) -> OutputSet:
        with _LOCK:
            _ACTIVE.append(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.discard()
        with _LOCK:
            _ACTIVE.remove(self)

    def write(self, path: str | Path, content: str | bytes) -> None:
        """Stage `content` for `path` (one of the outputs): written now, in place at commit."""
        path = Path(path)
        assert any(path == p for p in self.outputs.values()), f"{path} is not a declared output"
        try:
            # Recorded first, so that even a mkdir failing half-way is undone (deepest first).
            self._made += [p for p in (path.parent, *path.parent.parents) if not p.exists()]
            path.parent.mkdir(parents=True, exist_ok=True)
            with _LOCK:  # created and registered at once, so an abort finds it
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                           suffix=".tmp")
                old = self._staged.get(path)
                self._staged[path] = Path(tmp)
            if old is not None:
                old.unlink(missing_ok=True)
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.chmod(fd, 0o666 & ~_umask())
            data = content.encode() if isinstance(content, str) else content
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise _write_error(path, exc) from None

    def commit(self) -> None:
        """Rename every staged file into place; if one rename fails, undo the others
        (an output that existed before gets its old content back)."""
        with _LOCK:
            try:
                # Every old file is saved before the first rename, so a rename that
                # fails can always be undone.
                backups = _backups(list(self._staged))
                done: list[Path] = []
                try:
                    for path, tmp in self._staged.items():
                        os.replace(tmp, path)
                        done.append(path)
                except OSError as exc:
                    for path in reversed(done):
                        if path in backups:
                            os.replace(backups.pop(path), path)
                        else:
                            path.unlink(missing_ok=True)
                    raise _write_error(next(p for p in self._staged if p not in done),
                                       exc) from None
                finally:
                    for backup in backups.values():
                        backup.unlink(missing_ok=True)
            finally:
                for tmp in self._staged.values():
                    tmp.unlink(missing_ok=True)
                self._staged.clear()
            self._made.clear()

    def discard(self) -> None:
        """Remove the staged files (outputs already in place are kept)."""
        with _LOCK:
            self._discard()

    def _discard(self) -> None:
        for tmp in self._staged.values():
            tmp.unlink(missing_ok=True)
        self._staged.clear()
        for directory in self._made:
            with contextlib.suppress(OSError):  # not empty: something else was put there
                directory.rmdir()
        self._made.clear()


def _backups(paths: list[Path]) -> dict[Path, Path]:
    """A saved copy of each existing file among `paths` (a hard link, or a copy where
    the file system has no hard links), so a failed commit can restore it. If one
    cannot be saved, none is kept and the error names the file: nothing was changed."""
    backups: dict[Path, Path] = {}
    try:
        for path in paths:
            if path.is_file():
                backup = path.with_name(f".{path.name}.{os.getpid()}.old")
                backup.unlink(missing_ok=True)
                try:
                    os.link(path, backup)
                except OSError:
                    shutil.copy2(path, backup)
                backups[path] = backup
    except OSError as exc:
        for backup in backups.values():
            backup.unlink(missing_ok=True)
        raise _write_error(path, exc) from None
    return backups


def _write_error(path: Path, exc: OSError) -> CimcError:
    reason = exc.strerror or str(exc)
    return CimcError(f"cannot write {path}: {reason}; check that the directory exists and is "
                     "writable and that the path is not a directory")


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write one file via a temporary file renamed into place.

    A file system problem (missing or read-only directory, a directory in the
    way) is a CimcError naming `path`.
    """
    path = Path(path)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CimcError(f"cannot write {path}: {blocker} is a file, not a directory")
    with OutputSet({str(path): path}) as out:
        out.write(path, content)
        out.commit()


@contextlib.contextmanager
def abort_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT remove every staged output and end
    the process with status 128 + the signal number.

    A watcher thread acts on the signal at once, even while the main thread is
    inside a long native call (the placer's solver), which would delay a Python
    signal handler; it waits for a commit in progress to finish. Outside the
    main thread (where handlers cannot be installed) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    # A Python-level handler must exist for the wakeup byte to be written; the
    # watcher does the work.
    # A signal the caller ignores (nohup's SIGHUP, a background job's SIGINT) stays ignored.
    previous = {number: signal.signal(number, _note) for number in ABORT_SIGNALS
                if signal.getsignal(number) is not signal.SIG_IGN}
    watcher = threading.Thread(target=_watch, args=(read_fd,), name="cimc-abort", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(old_fd)
        os.write(write_fd, b"\0")  # stops the watcher
        watcher.join()
        os.close(read_fd)
        os.close(write_fd)


def _note(number: int, frame: object) -> None:
    """The Python-level handler: the watcher thread has already been woken."""


def _watch(read_fd: int) -> None:
    while True:
        for number in os.read(read_fd, 64):
            if number == 0:
                return
            if number in ABORT_SIGNALS:
                _abort(number)


def _abort(number: int) -> None:
    _LOCK.acquire()  # never released: no stage or commit starts after this
    for outputs in _ACTIVE:
        outputs._discard()
    name = "interrupted" if number == signal.SIGINT else \
        f"stopped by {signal.Signals(number).name}"
    with contextlib.suppress(OSError):
        os.write(2, f"cimc: {name}\n".encode())
    os._exit(128 + number)
