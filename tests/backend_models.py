"""Models for the backend tests, beyond tests/models.py: networks small enough
for the `tiny` target (several cores, partial sums across cores), and the
model-scale CNNs users bring (ResNet-18, MobileNetV2, VGG-11/16/19 at 32x32;
ResNet-18, ResNet-50 and MobileNetV2 at 224x224).

They are exported and quantized exactly as tests/models.py does it (torch
legacy exporter, onnxruntime QDQ, per-channel int8 weights, int8 or uint8
activations, seeded weights and calibration data).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from models import CALIBRATION_BATCHES, CALIBRATION_SEED, EXPORTERS, quantize_qdq, workdir

INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mnist_tiny": (1, 1, 28, 28),
    "mlp_tiny": (1, 64),
    "mlp_softmax_tiny": (1, 64),
    "mlp_softmax_reshape_tiny": (1, 64),
    "concat_tiny": (1, 3, 12, 12),
    "lrn_tiny": (1, 3, 4, 4),
    "resnet18": (1, 3, 32, 32),
    "mobilenetv2": (1, 3, 32, 32),
    "vgg11": (1, 3, 32, 32),
    "vgg16": (1, 3, 32, 32),
    "vgg19": (1, 3, 32, 32),
    "resnet18_224": (1, 3, 224, 224),
    "resnet50_224": (1, 3, 224, 224),
    "mobilenetv2_224": (1, 3, 224, 224),
    "vgg16_224": (1, 3, 224, 224),
}

# VGG configurations: output channels per conv, "M" a 2x2 max pool.
VGG = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


def _torch_module(name: str):  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)

    def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout)]

    class MnistTiny(nn.Module):
        """An MNIST CNN small enough for `tiny`: 27 of its 32 crossbars."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 3 * 3, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(torch.flatten(x, 1))

    class Reshape(nn.Module):  # a constant target shape (nn.Unflatten exports a computed one)
        def __init__(self, shape: tuple[int, ...]) -> None:
            super().__init__()
            self.shape = shape

        def forward(self, x):
            return x.reshape(self.shape)

    class ConcatTiny(nn.Module):
        """An inception-style block: a 3x3 and a 1x1 conv of one input concatenated on
        channels, so the concat's inputs carry different quantization parameters."""

        def __init__(self) -> None:
            super().__init__()
            self.wide = nn.Conv2d(3, 8, 3, padding=1)
            self.narrow = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return torch.cat([torch.relu(self.wide(x)), self.narrow(x)], 1)

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(),
                                      *conv_bn(cout, cout))
            self.skip = (nn.Sequential(*conv_bn(cin, cout, 1, stride))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, mid: int, stride: int) -> None:
            super().__init__()
            cout = 4 * mid
            self.body = nn.Sequential(*conv_bn(cin, mid, 1), nn.ReLU(),
                                      *conv_bn(mid, mid, 3, stride), nn.ReLU(),
                                      *conv_bn(mid, cout, 1))
            self.skip = (nn.Sequential(*conv_bn(cin, cout, 1, stride))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    class ResNet50(nn.Module):
        """ResNet-50 at 224x224 (torchvision's v1.5 layout: stride on the 3x3), 1000
        classes."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [*conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
            cin = 64
            for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for k in range(blocks):
                    layers.append(Bottleneck(cin, mid, stride if k == 0 else 1))
                    cin = 4 * mid
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.fc(torch.flatten(x, 1))

    class ResNet18(nn.Module):
        """ResNet-18 for 32x32 inputs (3x3 stem, no max pool), 10 classes; with `imagenet`
        the 224x224 original (7x7 stride-2 stem, 3x3 stride-2 max pool, 1000 classes)."""

        def __init__(self, imagenet: bool = False) -> None:
            super().__init__()
            layers: list[nn.Module] = [*conv_bn(3, 64), nn.ReLU()]
            if imagenet:
                layers = [*conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
            cin = 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
                cin = cout
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(512, 1000 if imagenet else 10)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.fc(torch.flatten(x, 1))

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            mid = cin * expand
            layers = [*conv_bn(cin, mid, 1), nn.ReLU6()] if expand != 1 else []
            layers += [*conv_bn(mid, mid, 3, stride, groups=mid), nn.ReLU6(),
                       *conv_bn(mid, cout, 1)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        """MobileNetV2 (width 1.0) for 32x32 inputs: stride-1 stem, 10 classes; with
        `imagenet` the 224x224 original (stride-2 stem and second stage, 1000 classes)."""

        def __init__(self, imagenet: bool = False) -> None:
            super().__init__()
            layers: list[nn.Module] = [*conv_bn(3, 32, 3, 2 if imagenet else 1), nn.ReLU6()]
            cin = 32
            second = 2 if imagenet else 1
            for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, second), (6, 32, 3, 2),
                                                  (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                                  (6, 320, 1, 1)):
                for k in range(repeats):
                    layers.append(Inverted(cin, cout, stride if k == 0 else 1, expand))
                    cin = cout
            layers += [*conv_bn(cin, 1280, 1), nn.ReLU6()]
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(1280, 1000 if imagenet else 10)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.fc(torch.flatten(x, 1))

    class Vgg(nn.Module):
        """VGG with batch norm for 32x32 inputs (CIFAR style: a 512-512-10 classifier), 10
        classes; with `imagenet` the 224x224 original's classifier (25088-4096-4096-1000),
        138 M weights, ~35k crossbars on `pimcomp`, which has 8,704: it runs in phases."""

        def __init__(self, config: tuple, imagenet: bool = False) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            cin = 3
            for v in config:
                if v == "M":
                    layers.append(nn.MaxPool2d(2))
                else:
                    layers += [*conv_bn(cin, int(v)), nn.ReLU()]
                    cin = int(v)
            self.features = nn.Sequential(*layers)
            self.classifier = (
                nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                              nn.ReLU(), nn.Linear(4096, 1000)) if imagenet else
                nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    factories = {
        "mnist_tiny": MnistTiny,
        "mlp_tiny": lambda: nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16),
                                          nn.ReLU(), nn.Linear(16, 10)),
        # The quantizer quantizes the Softmax result too: a host-side quantize + dequantize
        # after the chip's last dequantize.
        "mlp_softmax_tiny": lambda: nn.Sequential(nn.Linear(64, 16), nn.ReLU(),
                                                  nn.Linear(16, 10), nn.Softmax(dim=1)),
        # ... and then reshaped to [1, 10, 1, 1], as SqueezeNet's tail: a reshape of codes
        # between the host's quantize and dequantize.
        "mlp_softmax_reshape_tiny": lambda: nn.Sequential(
            nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10), nn.Softmax(dim=1),
            Reshape((1, 10, 1, 1))),
        "concat_tiny": ConcatTiny,
        "resnet18": ResNet18,
        "mobilenetv2": MobileNetV2,
        "vgg11": lambda: Vgg(VGG["vgg11"]),
        "vgg16": lambda: Vgg(VGG["vgg16"]),
        "vgg19": lambda: Vgg(VGG["vgg19"]),
        "resnet18_224": lambda: ResNet18(imagenet=True),
        "vgg16_224": lambda: Vgg(VGG["vgg16"], imagenet=True),
        "resnet50_224": ResNet50,
        "mobilenetv2_224": lambda: MobileNetV2(imagenet=True),
    }
    model = factories[name]()
    with torch.no_grad():  # batch-norm statistics that make batch norm do something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _lrn_tiny():  # -> onnx.ModelProto
    """AlexNet's shape in small: conv, relu, LRN (float only), conv, relu, gemm. Built
    with onnx.helper because torch exports LocalResponseNorm as Pad/Pow/Div."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> object:
        data = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        return numpy_helper.from_array(data, name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("LRN", ["r1"], ["n1"], size=3),
        helper.make_node("Conv", ["n1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "lrn_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, INPUT_SHAPES["lrn_tiny"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, (1, 10))],
        [weight("w1", 4, 3, 3, 3), weight("b1", 4), weight("w2", 4, 4, 3, 3), weight("b2", 4),
         weight("w3", 10, 4 * 4 * 4), weight("b3", 10)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


# Models built with onnx.helper rather than exported from torch.
ONNX_GRAPHS = {"lrn_tiny": _lrn_tiny}


def sample_inputs(name: str, count: int, seed: int) -> np.ndarray:
    """`count` seeded standard-normal inputs for `name`, stacked on axis 0."""
    shape = INPUT_SHAPES[name]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, *shape[1:])).astype(np.float32)


@functools.cache
def quantized_model(name: str, activations: str = "int8") -> Path:
    """The QDQ model of `name`: per-channel int8 weights, `activations` int8 or uint8."""
    import contextlib
    import io

    import torch

    source = workdir() / f"backend-{name}.onnx"
    if name in ONNX_GRAPHS:
        import onnx

        onnx.save(ONNX_GRAPHS[name](), source)
    if not source.exists():
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            torch.onnx.export(_torch_module(name), (torch.zeros(INPUT_SHAPES[name]),),
                              str(source), input_names=["input"], output_names=["logits"],
                              opset_version=EXPORTERS["legacy"], dynamo=False)
    batches = sample_inputs(name, CALIBRATION_BATCHES, CALIBRATION_SEED)
    return quantize_qdq(source, batches, activations)
