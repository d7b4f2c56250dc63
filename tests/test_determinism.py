"""The compiled program depends only on the model, the target and the options: not on
the machine's load (the placer counts its work, never measures time) nor on
Python's string hashing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import backend_models

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """`count` processes spinning on the CPU while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def compile_program(model: Path, output: Path, hash_seed: str) -> tuple[bytes, bytes]:
    """prog.s and prog.img of `cimc MODEL -o output --target tiny` (the cpsat placer, a
    short search)."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "cimc", str(model), "-o", str(output),
               "--target", "tiny", "--place-effort", "0.2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # no wall-clock limit fired
    return output.read_bytes(), output.with_suffix(".img").read_bytes()


def test_program_is_identical_on_a_busy_machine_and_any_hash_seed(tmp_path: Path) -> None:
    model = backend_models.quantized_model("mnist_tiny")
    quiet = compile_program(model, tmp_path / "quiet" / "prog.s", "1")
    with busy_cores(1):  # one spinner loads the machine without starving the other tests
        loaded = compile_program(model, tmp_path / "loaded" / "prog.s", "2")
    assert loaded[0] == quiet[0]
    assert loaded[1] == quiet[1]
