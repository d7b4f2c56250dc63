"""Differential fuzzing: random small quantized graphs, compiled and simulated.

hypothesis draws small graphs (tests/fuzz_models.py): convs with stride, pad,
dilation and groups (depthwise included), max/average/global pools, relu and
clip, residual adds, concats, flatten + gemm/matmul heads; int8 or uint8
activations; usual or extreme scales and zero points; biases up to the int32
limits. They are written as QDQ graphs directly or as float graphs quantized
by onnxruntime (`models.quantize_qdq`). For every example:

* the reference interpreter (cimc.reference) agrees with the exact oracle
  (cimc.reference.oracle.ExactOracle) within one quantum on every quantized tensor
  whose operands it computed exactly as the oracle did (onnxruntime rounds in
  float32, so an exact tie may go either way; such a difference is then
  followed no further);
* for each target (`tiny`, `isaac`) the program either compiles, and the
  simulator's outputs equal the reference bit for bit, or compilation fails
  with a CimcError whose message is one of ACCEPTED (the model is too big for
  the target, ...). Any other exception is a failure.

Each example also draws the backend's choices (latency or throughput
pipeline, placer, replication).

The examples are derandomized (the same every run, no example database), so
CI is reproducible. `make test` runs 200 (about three minutes on one core).
For a longer hunt:

    CIMC_FUZZ_EXAMPLES=5000 pytest -q tests/test_fuzz.py      # examples per test
    CIMC_FUZZ_SEED=7 CIMC_FUZZ_EXAMPLES=2000 pytest -q tests/test_fuzz.py  # other examples

`CIMC_FUZZ_KEEP=DIR` copies the model (and `-x.npy` inputs) of each failing
example into DIR, `CIMC_FUZZ_SHRINK=0` reports a failure without shrinking it
(shrinking compiles it hundreds of times), and `--hypothesis-show-statistics`
tallies the outcomes (compiled and simulated, too big for `tiny`, ...).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fuzz_models
import models
import numpy as np
import onnx
from fuzz_models import Case
from hypothesis import HealthCheck, Phase, event, given, seed, settings
from hypothesis import strategies as st
from onnx import helper

import cimc
from cimc.diagnostics import CimcError
from cimc.frontend.quantize import import_model
from cimc.host.ports import reference_codes
from cimc.ir.module import Module
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image
from cimc.isa.simulator import run_program
from cimc.pass_manager import parse_pipeline, run_pipeline
from cimc.pipeline import FRONTEND
from cimc.reference import run_module
from cimc.reference.oracle import ExactOracle

TARGETS = ("tiny", "isaac")
# CimcErrors that are the model's limits, not cimc's faults.
ACCEPTED = (
    r"the model needs (at least )?\d+ crossbars on \d+ cores but target",
    r"a window lies wholly in the padding and the pool requantizes",
    # extreme scales
    r"scales of the operands and the result are out of proportion",
    r"the int32 accumulator of output channel \d+ overflows for some inputs",
)
EXAMPLES = int(os.environ.get("CIMC_FUZZ_EXAMPLES", "0"))
SEED = os.environ.get("CIMC_FUZZ_SEED")
# A directory to keep the model files of failing examples in (for reproducers).
KEEP = os.environ.get("CIMC_FUZZ_KEEP")
# Shrinking a failure compiles it hundreds of times; CIMC_FUZZ_SHRINK=0 reports it as found.
SHRINK = os.environ.get("CIMC_FUZZ_SHRINK", "1") != "0"


def fuzz(examples: int):  # -> decorator
    """hypothesis settings of one fuzz test: `examples` unless CIMC_FUZZ_EXAMPLES says."""
    configured = settings(
        max_examples=EXAMPLES or examples, deadline=None, database=None,
        derandomize=SEED is None, print_blob=False,
        phases=[p for p in Phase if SHRINK or p not in (Phase.shrink, Phase.explain)],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much])

    def decorate(test):  # type: ignore[no-untyped-def]
        test = configured(test)
        return seed(int(SEED))(test) if SEED is not None else test
    return decorate


@dataclass(frozen=True)
class Backend:
    """The backend choices one example compiles with."""

    pipeline: str
    placer: str
    replicate: float | None


BACKENDS = st.builds(Backend, st.sampled_from(["latency", "latency", "throughput"]),
                     st.sampled_from(["cpsat", "anneal", "sequential", "snake"]),
                     st.sampled_from([None, None, 0.9]))


def frontend(path: Path) -> Module:
    module = import_model(str(path))
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    return module


def activation_quantizers(model: onnx.ModelProto) -> dict[str, set[str]]:
    """Each QuantizeLinear output of an activation -> the activation codes its float
    computation reads (through DequantizeLinear), in graph order."""
    constants = {t.name for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    codes = [n.output[0] for n in model.graph.node
             if n.op_type == "QuantizeLinear" and n.input[0] not in constants]

    def reads(value: str) -> set[str]:
        node = producer.get(value)
        if node is None:
            return set()
        if node.op_type == "DequantizeLinear":
            return {node.input[0]} if node.input[0] in codes else set()
        return set().union(*(reads(v) for v in node.input if v and v not in constants))

    quantizers = {n.output[0]: n for n in model.graph.node if n.output[0] in codes}
    return {c: reads(quantizers[c].input[0]) for c in codes}


def check_reference_against_oracle(case: Case, model: onnx.ModelProto, integer: Module) -> None:
    quantizers = activation_quantizers(model)
    probe_model = copy.deepcopy(model)
    zero_points = {t.name: t.data_type for t in model.graph.initializer}
    nodes = {n.output[0]: n for n in model.graph.node}
    for code in quantizers:
        dtype = zero_points[nodes[code].input[2]]
        probe_model.graph.output.append(helper.make_tensor_value_info(code, dtype, None))
    oracle = ExactOracle(probe_model)
    count = len(model.graph.output)
    samples = [oracle.run({"input": case.x[i:i + 1]})[count:] for i in range(len(case.x))]
    want = {c: np.concatenate([s[i] for s in samples]) for i, c in enumerate(quantizers)}
    probe = copy.deepcopy(integer)
    probe.outputs = [c for c in quantizers if c in integer.values]
    got = run_module(probe, {"input": case.x})
    differs = set(quantizers) - set(got)  # not in the IR: unknown, so not followed
    for code, reads in quantizers.items():
        if code in differs:
            continue
        diff = np.abs(got[code].astype(np.int64) - want[code].astype(np.int64))
        if reads & differs:
            event("reference: an operand differed from the oracle by a tie")
        else:
            limit = 1 if reads else 0  # the input's quantization is exact
            assert diff.max() <= limit, (
                f"{case}\nreference and oracle differ by {diff.max()} quanta on {code}:\n"
                f"reference {got[code].ravel()[:16]}\noracle    {want[code].ravel()[:16]}")
        if diff.any():
            differs.add(code)


def check(case: Case, backend: Backend, accepted: tuple[str, ...] = ACCEPTED) -> None:
    """The checks of the module docstring; CimcErrors matching `accepted` are fine."""
    try:
        _check(case, backend, accepted)
    except BaseException:
        if KEEP:
            Path(KEEP).mkdir(parents=True, exist_ok=True)
            shutil.copy(case.path, KEEP)
            np.save(Path(KEEP) / f"{case.path.stem}-x.npy", case.x)
        raise


def _check(case: Case, backend: Backend, accepted: tuple[str, ...]) -> None:
    model = onnx.load(str(case.path))
    try:
        integer = frontend(case.path)
        check_reference_against_oracle(case, model, integer)
    except CimcError as exc:
        _accept(case, "frontend and reference", exc, accepted)
        return
    for target in TARGETS:
        with tempfile.TemporaryDirectory(prefix="cimc-fuzz-") as tmp:
            prog = Path(tmp) / "prog.s"
            try:
                compiled = cimc.compile(
                    case.path, target, pipeline=backend.pipeline,
                    stream=2 if backend.pipeline == "throughput" else 0,
                    replicate=backend.replicate, placer=backend.placer, place_effort=0.1)
                compiled.save(prog)
            except CimcError as exc:
                _accept(case, target, exc, accepted)
                continue
            inputs, expected = reference_codes(compiled.integer, {"input": case.x})
            outputs, _ = run_program(assemble_file(prog), load_image(prog.with_suffix(".img")),
                                     compiled.target, inputs)
        event(f"{target}: compiled and simulated")
        assert sorted(outputs) == sorted(expected)
        for port, codes in expected.items():
            np.testing.assert_array_equal(outputs[port], codes,
                                          err_msg=f"{case}\non {target} with {backend}")


def _accept(case: Case, where: str, exc: CimcError, accepted: tuple[str, ...]) -> None:
    message = str(exc)
    pattern = next((p for p in accepted if re.search(p, message)), None)
    assert pattern is not None, f"{case}\n{where}: unexpected CimcError: {message}"
    event(f"{where}: {pattern}")


WORKDIR = models.workdir()


@fuzz(examples=90)
@given(case=fuzz_models.chain_cases(WORKDIR), backend=BACKENDS)
def test_conv_pool_chains(case: Case, backend: Backend) -> None:
    check(case, backend)


@fuzz(examples=60)
@given(case=fuzz_models.branch_cases(WORKDIR), backend=BACKENDS)
def test_residual_adds_and_concats(case: Case, backend: Backend) -> None:
    check(case, backend)


@fuzz(examples=50)
@given(case=fuzz_models.quantizer_cases(WORKDIR), backend=BACKENDS)
def test_models_quantized_by_onnxruntime(case: Case, backend: Backend) -> None:
    check(case, backend)
