"""Every pipeline of registered passes either works or fails with one clear line.

The pipelines are made systematically from the compiler's own list
(cimc/pipeline.py FRONTEND + BACKEND): every pass alone, the list with one or
two passes dropped, and the list with one pass moved to another place or run
twice. Each runs through `cimc opt` (in-process, `cimc.cli.main`) on a small
QDQ int8 model and on .cir modules saved after each stage of the compiler's
pipeline. A run succeeds (status 0) or fails with status 1 and exactly one
line on stderr, `cimc: error: pass 'P' needs the results of 'R' ...`, naming
the pass it runs and the pass it lacks; never an exception or a traceback.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from fuzz_models import ConvSpec, PoolSpec, QdqBuilder, Quant

from cimc.cli import main
from cimc.passes import PASSES
from cimc.pipeline import BACKEND, FRONTEND

FULL = (*FRONTEND, *BACKEND)
# Options that keep the runs fast (sequential placement) and make replicate copy
# weights, so a placement made before it is stale.
OPTIONS = {"place": "place{placer=sequential}", "replicate": "replicate{budget=0.9}"}
# The stages a .cir input is saved at: after the passes FULL[:k].
STAGES = {"folded": 2, "lowered": 3, "tiled": 4, "placed": FULL.index("place") + 1,
          "scheduled": len(FULL)}
ERROR = re.compile(r"cimc: error: pass '([a-z-]+)' needs the results of '([a-z-]+)'")


def _spec(names: tuple[str, ...]) -> str:
    return ",".join(OPTIONS.get(name, name) for name in names)


def pipelines(passes: tuple[str, ...] = FULL) -> list[tuple[str, ...]]:
    """Every pass alone; `passes` without one or two of them, or with one of them
    moved elsewhere or run twice in a row."""
    found = {(name,) for name in FULL}
    for count in (1, 2):
        found |= {tuple(n for n in passes if n not in dropped)
                  for dropped in itertools.combinations(passes, count)}
    for i, j in itertools.product(range(len(passes)), repeat=2):
        rest = passes[:i] + passes[i + 1:]
        found.add((*rest[:j], passes[i], *rest[j:]))
    found |= {(*passes[:i + 1], *passes[i:]) for i in range(len(passes))}
    return sorted(found - {()})


def cases() -> list[tuple[str, tuple[str, ...]]]:
    """(input, pipeline): the ONNX model through every pipeline of FULL, a .cir module
    saved after FULL[:k] through every pipeline of FULL[k:] (the passes it has not
    run). Sorted, so every xdist worker collects the same list."""
    found = {("onnx", names) for names in pipelines()}
    for stage, count in STAGES.items():
        found |= {(stage, names) for names in pipelines(FULL[count:])}
    return sorted(found)


def _model(path: Path) -> Path:
    """A QDQ int8 model with every kind the backend places: two convolutions (matvec)
    added (eltwise), max-pooled (pool), concatenated (concat), flattened (view) into a
    gemm (matvec)."""
    b = QdqBuilder(np.random.default_rng(0))
    x = b.input((1, 2, 6, 6), Quant(0.05, 0, True))
    conv = ConvSpec(4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu", "small")
    left = b.conv(x, conv, np.full(4, 0.01), Quant(0.1, 0, True), False)
    right = b.conv(x, conv, np.full(4, 0.02), Quant(0.1, 3, True), False)
    total = b.add(left, right, Quant(0.2, 0, True), "")
    pooled = b.pool(total, PoolSpec("max", (2, 2), (2, 2)), Quant(0.2, 0, True))
    joined = b.concat([pooled, pooled], Quant(0.2, 0, True))
    y = b.head(joined, 3, "gemm", np.full(3, 0.01), Quant(0.3, 0, True), "small", "", False,
               True)
    return b.g.save(path, x, [y])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The ONNX model and the .cir modules of each stage, by name."""
    folder = tmp_path_factory.mktemp("pass-order")
    model = str(_model(folder / "m.onnx"))
    found = {"onnx": model}
    for stage, count in STAGES.items():
        path = folder / f"{stage}.cir"
        assert main(["opt", "--target", "tiny", "-p", _spec(FULL[:count]), model,
                     "-o", str(path)]) == 0
        found[stage] = str(path)
    return found


def _outcome(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `cimc ARGS`: "ok", or the one error line (checked), never an exception."""
    status = main(args)  # an exception escaping here fails the test
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if status == 0:
        return "ok"
    assert status == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cimc: error: "), err
    match = ERROR.match(lines[0])
    assert match is not None, err
    assert match.group(1) in args[-2] and match.group(2) in PASSES, err
    return lines[0]


@pytest.mark.parametrize(("stage", "names"), cases(),
                         ids=[f"{stage}:{_spec(names)}" for stage, names in cases()])
def test_a_pipeline_runs_or_names_the_pass_it_lacks(
        stage: str, names: tuple[str, ...], inputs: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    outcome = _outcome(["opt", "--target", "tiny", "-p", _spec(names), inputs[stage]], capsys)
    if names == FULL or (names == ("schedule",) and stage in ("placed", "scheduled")):
        assert outcome == "ok"


@pytest.mark.parametrize(("stage", "pipeline", "says"), [
    ("onnx", "tile,place", "pass 'tile' needs the results of 'fold-qdq' and 'lower'"),
    # This one used to end in KeyError: 'block_cores'.
    ("onnx", "canonicalize,fold-qdq,lower,tile,schedule", "pass 'schedule' needs the "
     "results of 'place', which the pipeline does not run before it (matvec "),
    # These two ran schedule on a stale placement: an error naming no pass, or
    # KeyError: 'core' (lowering again drops the concat's core).
    ("onnx", "canonicalize,fold-qdq,lower,tile,place{placer=sequential},"
     "replicate{budget=0.9},schedule", "pass 'schedule' needs the results of 'place', "
     "which are stale when it runs ('replicate' runs after 'place', which builds on its "
     "results); run it after 'replicate', e.g. -p canonicalize,fold-qdq,lower,tile,"
     "replicate,place,schedule"),
    ("placed", "place{placer=sequential},lower,tile,schedule", "pass 'schedule' needs the "
     "results of 'place', which are stale when it runs ('tile' runs after 'place'"),
])
def test_pipelines_that_went_wrong_name_the_missing_pass(
        stage: str, pipeline: str, says: str, inputs: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert says in _outcome(["opt", "--target", "tiny", "-p", pipeline, inputs[stage]], capsys)


def test_a_module_replicated_after_placement_must_be_placed_again(
        inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    placed, replicated = str(tmp_path / "placed.cir"), str(tmp_path / "replicated.cir")
    assert main(["opt", "--target", "tiny", "-p", "place{placer=sequential}", inputs["tiled"],
                 "-o", placed]) == 0
    assert main(["opt", "--target", "tiny", "-p", "replicate{budget=0.9}", placed,
                 "-o", replicated]) == 0
    assert "has cores for 2 blocks, not for its 6 copies of 2" in _outcome(
        ["opt", "--target", "tiny", "-p", "schedule", replicated], capsys)
    assert _outcome(["opt", "--target", "tiny", "-p", "place{placer=sequential},schedule",
                     replicated], capsys) == "ok"


def test_a_whole_pipeline_for_another_target_works(
        inputs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _outcome(["opt", "--target", "pimcomp", "-p", _spec(FULL), inputs["onnx"]],
                    capsys) == "ok"
