"""The timing model (cimc/analysis/timing.py) against the simulator: the report's
modelled cycles, throughput and energy within 5% of a simulated run, in latency and
throughput mode, with replicas, on models whose rows span several cores."""

from __future__ import annotations

import backend_models
import models
import pytest

import cimc

CASES = [
    ("mnist_tiny", "tiny", {}),
    ("mnist_tiny", "tiny", {"pipeline": "throughput"}),
    ("mlp_tiny", "tiny", {"pipeline": "throughput"}),
    ("concat_tiny", "tiny", {}),
    ("mnist_cnn", "isaac", {"replicate": 0.5}),
    ("residual", "isaac", {"pipeline": "throughput"}),
    ("separable", "tiny", {}),
]


def _model(name: str):  # -> Path
    if name in backend_models.INPUT_SHAPES:
        return backend_models.quantized_model(name)
    return models.quantized_model(name)


@pytest.mark.parametrize(("name", "target", "options"), CASES,
                         ids=[f"{n}-{t}-{'-'.join(o.keys()) or 'latency'}" for n, t, o in CASES])
def test_model_within_five_percent_of_the_simulator(name: str, target: str,
                                                    options: dict) -> None:
    program = cimc.compile(_model(name), target, **options)
    modelled, simulated = program.report, program.simulated_report
    assert modelled["stream"] == simulated["stream"]
    for key in ("cycles", "throughput", "energy_nj"):
        assert abs(modelled[key] / simulated[key] - 1) < 0.05, (key, modelled[key],
                                                                 simulated[key])


def test_model_follows_the_schedule() -> None:
    """Not a constant: a program streaming more images takes longer, by the model as by
    the simulator."""
    model = backend_models.quantized_model("mnist_tiny")
    one = cimc.compile(model, "tiny", pipeline="throughput", stream=1).report["cycles"]
    four = cimc.compile(model, "tiny", pipeline="throughput", stream=4).report["cycles"]
    assert 2 * one < four
