"""Small torch models that multiply two activations (issue 13), exported and quantized as
tests/models.py does it (onnxruntime QDQ, per-channel int8 weights, seeded weights and
calibration data):

* `squeeze_excite`: a squeeze-excitation block, `x * sigmoid(fc(relu(fc(pool(x)))))`, the
  gate [1,C,1,1] broadcast over the image;
* `gated`: a gated product of two branches of the same shape, `conv(x) * sigmoid(conv(x))`;
* `excite_linear`: squeeze-excitation through Linear layers on the pooled [1,C] vector,
  viewed as [1,C,1,1] (torchvision's way);
* `mobilenet_v3`: a MobileNetV3 block (1x1 expand, HardSwish, depthwise 3x3, SiLU,
  squeeze-excitation with HardSigmoid, 1x1 project, residual add) and a classifier.
"""

from __future__ import annotations

from models import TorchFamily

INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "squeeze_excite": (1, 3, 8, 8),
    "gated": (1, 3, 8, 8),
    "mobilenet_v3": (1, 3, 12, 12),
    "excite_linear": (1, 3, 8, 8),
}
# name -> the exporters (name -> opset) it is exported with.
EXPORTS: dict[str, dict[str, int]] = {
    "squeeze_excite": {"legacy": 13, "dynamo": 18},
    "gated": {"legacy": 13, "dynamo": 18},
    "mobilenet_v3": {"legacy": 13, "dynamo": 18},
    "excite_linear": {"legacy": 13, "dynamo": 18},
}


def _torch_module(name: str):  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int, squeezed: int, gate: type = nn.Sigmoid) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1),
                                    nn.ReLU(), nn.Conv2d(squeezed, channels, 1), gate())

        def forward(self, x):
            return x * self.fc(x)

    class SqueezeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                      SqueezeExcite(16, 4), nn.Conv2d(16, 8, 3, stride=2))
            self.head = nn.Linear(8 * 3 * 3, 10)

        def forward(self, x):
            return self.head(torch.flatten(self.body(x), 1))

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.value = nn.Conv2d(3, 8, 3, padding=1)
            self.gate = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2), nn.Flatten(),
                                      nn.Linear(8 * 3 * 3, 10))

        def forward(self, x):
            return self.head(self.value(x) * torch.sigmoid(self.gate(x)))

    class MobileNetV3Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Hardswish())
            self.expand = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Hardswish())
            self.depthwise = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.SiLU())
            self.excite = SqueezeExcite(32, 8, nn.Hardsigmoid)
            self.project = nn.Conv2d(32, 16, 1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

        def forward(self, x):
            x = self.stem(x)
            y = self.project(self.excite(self.depthwise(self.expand(x))))
            return self.head(x + y)

    class ExciteLinear(nn.Module):  # squeeze-excitation as torchvision writes it with Linear
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
            self.fc = nn.Sequential(nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 16),
                                    nn.Hardsigmoid())
            self.head = nn.Sequential(nn.Conv2d(16, 8, 3, stride=2), nn.Flatten(),
                                      nn.Linear(8 * 3 * 3, 10))

        def forward(self, x):
            x = self.conv(x)
            gate = self.fc(x.mean((2, 3))).view(1, 16, 1, 1)
            return self.head(x * gate)

    factories = {"squeeze_excite": SqueezeNet, "gated": Gated, "mobilenet_v3": MobileNetV3Block,
                 "excite_linear": ExciteLinear}
    return factories[name]().eval()


FAMILY = TorchFamily("prod", _torch_module, INPUT_SHAPES, EXPORTS, "logits")
float_model, quantized_model = FAMILY.float_model, FAMILY.quantized_model
sample_inputs = FAMILY.sample_inputs
CASES = FAMILY.cases
