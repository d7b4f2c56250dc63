"""On a terminal, a compile keeps one status line of its stages on stderr and clears
it at the end; with --quiet, or when stderr is not a terminal, there is none."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"


def stderr_on_a_terminal(args: list[str]) -> bytes:
    master, slave = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "cimc", *args], stderr=slave,
                             stdout=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert child.wait() == 0
    return b"".join(chunks)


def test_a_compile_on_a_terminal_shows_its_stages_then_clears_them(tmp_path: Path) -> None:
    args = [str(MODEL), "-o", str(tmp_path / "p.s"), "--report", str(tmp_path / "r.json")]
    shown = stderr_on_a_terminal(args)
    stages = [part.split(b"cimc: ", 1)[1] for part in shown.split(b"\r\x1b[K") if part]
    assert stages == [b"import mnist_cnn_qdq.onnx", b"canonicalize", b"fold-qdq", b"lower",
                      b"tile", b"partition", b"replicate", b"place", b"schedule", b"emit",
                      b"report", b"writing"]
    assert shown.endswith(b"\r\x1b[K")  # cleared
    assert stderr_on_a_terminal([*args, "--quiet"]) == b""


def test_no_status_line_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cimc", str(MODEL), "-o", str(tmp_path / "p.s")],
                          capture_output=True, check=True)
    assert done.stderr == b""


def test_the_placer_shows_its_best_hop_bytes_and_the_bound(tmp_path: Path) -> None:
    import models

    model = models.quantized_model("separable")  # one phase on tiny
    shown = stderr_on_a_terminal([str(model), "-o", str(tmp_path / "p.s"), "--target", "tiny"])
    lines = [part.split(b"cimc: ", 1)[1] for part in shown.split(b"\r\x1b[K") if part]
    placed = [line for line in lines if line.startswith(b"place: hop-bytes ")]
    assert placed and all(b"(lower bound " in line for line in placed)
    costs = [int(line.split()[2].replace(b",", b"")) for line in placed]
    assert costs == sorted(costs, reverse=True)  # the best so far never grows
