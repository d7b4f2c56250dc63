"""Small torch models with the activations the vector unit's lookup table runs (Sigmoid,
Tanh, HardSwish, SiLU, LeakyReLU, PReLU with one slope, GELU), exported and quantized
as tests/models.py does it: onnxruntime QDQ, per-channel int8 weights, seeded weights
and calibration data.

HardSwish exports as one ONNX op from opset 14 and GELU from opset 20 (exporter
"dynamo20"); below, the exporters write HardSwish as x * HardSigmoid(x) and GELU as
Div/Erf/Add/Mul (tanh GELU with Pow or Mul for the cube), which onnxruntime quantizes
op by op except Div and Pow (onnxruntime's optimizer rewrites HardSwish as
x * HardSigmoid(x) anyway; torch exports SiLU as x * Sigmoid(x)).
`conv_hardswish_by_hand` and `conv_scalars` hold element-wise arithmetic with
scalars (x + 3, x * 0.5, x / 6), which `lower` tabulates into one lookup;
`conv_channel_scale` a Mul by a per-channel constant (the chip's `scale`).
"""

from __future__ import annotations

from models import TorchFamily

INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "conv_leaky": (1, 3, 8, 8),
    "conv_prelu": (1, 3, 8, 8),
    "conv_hardswish": (1, 3, 8, 8),
    "conv_silu": (1, 3, 8, 8),
    "conv_hardswish_by_hand": (1, 3, 8, 8),
    "conv_scalars": (1, 3, 8, 8),
    "conv_channel_scale": (1, 3, 8, 8),
    "mlp_sigmoid_tanh": (1, 32),
    "mlp_gelu": (1, 32),
    "mlp_gelu_tanh": (1, 32),
}
# name -> the exporters (name -> opset) it is exported with.
EXPORTS: dict[str, dict[str, int]] = {
    "conv_leaky": {"legacy": 13, "dynamo": 18},
    "conv_prelu": {"legacy": 13, "dynamo": 18},
    "conv_hardswish": {"dynamo": 18},
    "conv_silu": {"legacy": 13, "dynamo": 18},
    "conv_hardswish_by_hand": {"legacy": 13, "dynamo": 18},
    "conv_scalars": {"legacy": 13, "dynamo": 18},
    "conv_channel_scale": {"legacy": 13, "dynamo": 18},
    "mlp_sigmoid_tanh": {"legacy": 13, "dynamo": 18},
    "mlp_gelu": {"legacy": 13, "dynamo": 18, "dynamo20": 20},
    "mlp_gelu_tanh": {"legacy": 13, "dynamo": 18, "dynamo20": 20},
}


def _torch_module(name: str):  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)

    def conv_net(act: type) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act(), nn.Conv2d(8, 8, 3, stride=2),
                             act(), nn.Flatten(), nn.Linear(8 * 3 * 3, 10))

    class HardSwishByHand(nn.Module):  # as MobileNetV3 code writes it
        def forward(self, x):
            return x * torch.clamp(x + 3, 0, 6) / 6

    class Scalars(nn.Module):  # Mul, Add (quantized by onnxruntime), Div (left float)
        def forward(self, x):
            return (x * 0.5 + 3) / 6

    class ChannelScale(nn.Module):  # a learned per-channel gain, then Sigmoid
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.gain = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
            self.out = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2), nn.Flatten(),
                                     nn.Linear(8 * 3 * 3, 10))

        def forward(self, x):
            return self.out(torch.sigmoid(nn.functional.leaky_relu(self.conv(x), 0.1)
                                          * self.gain))

    def mlp(*acts: nn.Module) -> nn.Module:
        return nn.Sequential(nn.Linear(32, 24), acts[0], nn.Linear(24, 16), acts[-1],
                             nn.Linear(16, 10))

    factories = {
        "conv_leaky": lambda: conv_net(lambda: nn.LeakyReLU(0.1)),
        "conv_prelu": lambda: conv_net(lambda: nn.PReLU(init=0.2)),
        "conv_hardswish": lambda: conv_net(nn.Hardswish),
        "conv_silu": lambda: conv_net(nn.SiLU),
        "conv_hardswish_by_hand": lambda: conv_net(HardSwishByHand),
        "conv_scalars": lambda: conv_net(Scalars),
        "conv_channel_scale": ChannelScale,
        "mlp_sigmoid_tanh": lambda: mlp(nn.Sigmoid(), nn.Tanh()),
        "mlp_gelu": lambda: mlp(nn.GELU()),
        "mlp_gelu_tanh": lambda: mlp(nn.GELU(approximate="tanh")),
    }
    return factories[name]().eval()


FAMILY = TorchFamily("act", _torch_module, INPUT_SHAPES, EXPORTS, "logits")
float_model, quantized_model = FAMILY.float_model, FAMILY.quantized_model
sample_inputs = FAMILY.sample_inputs
CASES = FAMILY.cases
