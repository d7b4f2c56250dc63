"""Robustness against bad models: mutants of the bundled MNIST model.

Every mutant of tests/mnist_mutants.py (bit flips, truncations, attribute,
initializer, scale, zero-point, opset, IR-version, node, edge, input and
output edits) either compiles with `cimc MUT.onnx -o prog.s --target isaac
--placer sequential` (the fastest placer; placement does not change what a
model computes) to a program whose simulated outputs equal the IR reference
interpreter's bit for bit, or fails with exit status 1 and one `cimc: error:
...` message: no traceback, no hang (60 s), no runaway memory (6 GiB), no
file left in the output directory. Each mutant runs in a forked child.

Corpus size: mutants 0..15 run in a plain `pytest` run, 0..199 with
--runslow (`make test`, about 1.5 minutes on one core), 0..799 with
--runheavy (`make test-all`). CIMC_MUTANTS=N runs mutants 0..N-1 whatever
the flags, e.g. `CIMC_MUTANTS=2000 pytest tests/test_mutants.py -n 2`.
A failing case prints how to write its .onnx file and reproduce it.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from mnist_mutants import KINDS, MNIST, check, mutant

PLAIN, SLOW, HEAVY = 16, 200, 800

# Mutants that fail for a bug another change is fixing, by index: the reason
# names the bug. Remove an entry once the fix is on main (the case then XPASSes).
KNOWN_FAILURES: dict[int, str] = {}


def _corpus() -> list:
    size = os.environ.get("CIMC_MUTANTS")
    cases = []
    for index in range(int(size) if size else HEAVY):
        marks = []
        if not size and index >= SLOW:
            marks.append(pytest.mark.heavy)
        elif not size and index >= PLAIN:
            marks.append(pytest.mark.slow)
        if index in KNOWN_FAILURES:
            marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[index], strict=False))
        cases.append(pytest.param(index, marks=marks, id=mutant_id(index)))
    return cases


def mutant_id(index: int) -> str:
    return f"{index:03d}-{KINDS[index % len(KINDS)]}"


@pytest.mark.parametrize("index", _corpus())
def test_mutant_compiles_bit_exact_or_fails_with_one_clear_error(index: int,
                                                                  tmp_path: Path) -> None:
    mut = mutant(index)
    outcome = check(mut, tmp_path)
    assert outcome.passed, (
        f"mutant {mut.name} ({mut.description}): {outcome.kind}\n{outcome.detail}\n"
        f"reproduce: PYTHONPATH=. python tests/mnist_mutants.py write {index} -o m.onnx && "
        "PYTHONPATH=. python -m cimc m.onnx -o out/prog.s --placer sequential")


def test_unmutated_model_passes_the_check(tmp_path: Path) -> None:
    """The check itself: the bundled model compiles and simulates equal to the reference."""
    from mnist_mutants import Mutant

    outcome = check(Mutant(-1, "none", "the bundled model", MNIST.read_bytes()), tmp_path)
    assert (outcome.kind, outcome.detail) == ("compiled", "")


def test_corpus_is_deterministic_and_every_mutant_differs_from_the_model() -> None:
    base = MNIST.read_bytes()
    first = [mutant(i) for i in range(len(KINDS))]
    assert [m.kind for m in first] == KINDS
    assert all(m.data != base for m in first)
    assert [m.data for m in first] == [mutant(i).data for i in range(len(KINDS))]
    # A protobuf-level mutant is still a parseable model (its edit is semantic).
    onnx.load_from_string(mutant(KINDS.index("scale")).data)
