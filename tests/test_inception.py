"""An inception-style network as torch exports it (legacy 13, dynamo 18) and
quantize_static quantizes it: two inception blocks (1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3;
3x3 max pool -> 1x1, concatenated on channels, each branch with its own scale), a
reduction block (strided 3x3 beside a strided max pool, padded average pool without
count_include_pad), global average pool and a linear classifier. Compiled for `isaac`
and `edge`: the simulator equals the reference bit for bit, the reference is within one
quantum of the exact oracle with the same top-1 class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from checks import assert_simulation_equals_reference, assert_within_a_quantum_of_the_oracle
from models import TorchFamily

import cimc
from cimc.reference.oracle import ExactOracle

SHAPE = (1, 3, 16, 16)


def _network():  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)

    def unit(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.BatchNorm2d(cout),
                             nn.ReLU())

    class Inception(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.one = unit(cin, 8)
            self.three = nn.Sequential(unit(cin, 6), unit(6, 8, 3))
            self.five = nn.Sequential(unit(cin, 4), unit(4, 6, 3), unit(6, 6, 3))
            self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), unit(cin, 4))

        def forward(self, x):
            return torch.cat([self.one(x), self.three(x), self.five(x), self.pool(x)], 1)

    class Reduction(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.conv = unit(cin, 12, 3, 2)
            self.max = nn.MaxPool2d(3, 2, 1)
            self.avg = nn.Sequential(nn.AvgPool2d(3, 2, 1, count_include_pad=False),
                                     unit(cin, 6))

        def forward(self, x):
            return torch.cat([self.conv(x), self.max(x), self.avg(x)], 1)

    network = nn.Sequential(unit(3, 16, 3), Inception(16), Reduction(26), Inception(44),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(26, 10))
    for module in network.modules():  # batch norms with statistics of their own
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return network.eval()


FAMILY = TorchFamily("inception", lambda _: _network(), {"network": SHAPE},
                     {"network": {"legacy": 13, "dynamo": 18}})


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_an_inception_network_runs_bit_exact(exporter: str, target: str,
                                              tmp_path: Path) -> None:
    model = FAMILY.quantized_model("network", exporter)
    program = cimc.compile(model, target)
    program.save(tmp_path / "p.s")
    concats = [op for op in program.integer.ops() if op.kind == "concat"]
    assert len(concats) == 3
    x = FAMILY.sample_inputs("network", 3, seed=3)
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)
    reference = assert_within_a_quantum_of_the_oracle(program, model, x)
    np.testing.assert_array_equal(reference.argmax(1), ExactOracle(model).run_samples(x).argmax(1))
