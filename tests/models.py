"""Model factories shared by the tests: small torch networks exported to ONNX
with both torch exporters, and their QDQ quantizations by onnxruntime.

Every factory returns the path of an .onnx file in one temporary directory per
test session; each model is built once per (name, exporter, activations).
Weights and calibration data are seeded, so the files are the same every run.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# name -> input shape (batch 1)
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mnist_cnn": (1, 1, 28, 28),
    "lenet5": (1, 1, 28, 28),
    "mlp": (1, 784),
    "residual": (1, 3, 16, 16),
    "separable": (1, 3, 16, 16),
    "resnet18": (1, 3, 224, 224),  # model scale: for slow tests only
    "batch4_cnn": (4, 3, 16, 16),  # a batch of 4 baked into the export
    "kws1d": (1, 8, 40),  # keyword spotting: 1-D convolutions over 8 features x 40 frames
}
MODELS = ("mnist_cnn", "lenet5", "mlp", "residual", "separable")
# exporter -> opset: the dynamo exporter (torch.export) and the legacy TorchScript one
EXPORTERS = {"dynamo": 18, "legacy": 13}
ACTIVATIONS = ("int8", "uint8")
CALIBRATION_SEED = 0
CALIBRATION_BATCHES = 8


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="cimc-test-models-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _torch_module(name: str):  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)

    class MnistCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 7 * 7, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(torch.flatten(x, 1))

    class LeNet5(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = nn.functional.avg_pool2d(torch.relu(self.conv1(x)), 2)
            x = nn.functional.avg_pool2d(torch.relu(self.conv2(x)), 2)
            x = torch.flatten(x, 1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
            self.skip = nn.Conv2d(8, 16, 1, stride=2)
            self.fc = nn.Linear(16, 10)
            with torch.no_grad():  # statistics that make batch norm do something
                self.bn1.running_mean.uniform_(-0.2, 0.2)
                self.bn1.running_var.uniform_(0.5, 2.0)
                self.bn1.weight.uniform_(0.5, 1.5)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(x + self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            x = torch.relu(self.skip(x) + self.conv3(torch.relu(self.down(x))))
            x = nn.functional.adaptive_avg_pool2d(x, 1)
            return self.fc(torch.flatten(x, 1))

    class Separable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pointwise = nn.Conv2d(8, 16, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = nn.functional.relu6(self.stem(x))
            x = nn.functional.relu6(self.depthwise(x))
            x = nn.functional.relu6(self.pointwise(x))
            x = nn.functional.avg_pool2d(torch.max_pool2d(x, 2), 2)
            x = nn.functional.adaptive_avg_pool2d(x, 1)
            return self.fc(torch.flatten(x, 1))

    class Block(nn.Module):  # a ResNet basic block
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
            return self.fc(torch.flatten(x, 1))

    mlp = nn.Sequential(
        nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    factories = {
        "mnist_cnn": MnistCnn,
        "lenet5": LeNet5,
        "mlp": lambda: mlp,
        "residual": Residual,
        "separable": Separable,
        "resnet18": ResNet18,
        "kws1d": lambda: nn.Sequential(
            nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 16, 3, padding=1, groups=16), nn.Conv1d(16, 24, 1), nn.ReLU(),
            nn.AvgPool1d(2), nn.Conv1d(24, 24, 3, stride=2, dilation=2, padding=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(24, 5)),
        "batch4_cnn": lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)),
    }
    return factories[name]().eval()


def export_torch(module, shape: tuple[int, ...], path: Path, opset: int, dynamo: bool,
                 output: str = "logits") -> Path:
    """`module` (a torch.nn.Module) exported to `path` on a zero input of `shape`, its input
    named "input", quietly (the dynamo exporter reports its progress on stdout, the legacy
    one its deprecation)."""
    import contextlib
    import io
    import warnings

    import torch

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(shape),), str(path), input_names=["input"],
                          output_names=[output], opset_version=opset, dynamo=dynamo)
    return path


def save_graph(path: Path, nodes: list, input_shape: list[int], output_shape: list[int],
               initializers: list, opset: int = 13) -> Path:
    """A float ONNX model of `nodes` from "input" to "output", saved at `path`."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)],
        initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def qdq_around(nodes: list, shape: list[int], out_shape: list[int], consts: list,
               x: tuple[int, float, int], y: tuple[int, float, int], opset: int,
               name: str = "qdq"):  # -> onnx.ModelProto
    """input -> Q -> DQ -> `nodes` (reading "xd", writing "t") -> Q -> DQ -> output, as
    quantize_static wraps a lone op; `x` and `y` are the (onnx element type, scale, zero
    point) of the input's and the result's quantization."""
    from onnx import TensorProto, helper, numpy_helper

    consts = [*consts,
              numpy_helper.from_array(np.array(x[1], np.float32), "sx"),
              numpy_helper.from_array(np.array(y[1], np.float32), "sy"),
              helper.make_tensor("zx", x[0], [], [x[2]]),
              helper.make_tensor("zy", y[0], [], [y[2]])]
    nodes = [helper.make_node("QuantizeLinear", ["input", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]), *nodes,
             helper.make_node("QuantizeLinear", ["t", "sy", "zy"], ["tq"]),
             helper.make_node("DequantizeLinear", ["tq", "sy", "zy"], ["output"])]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


class TorchFamily:
    """A family of small torch test models: each name's module (`modules(name)`), input
    shape and exporters (exporter -> opset), exported once per exporter and quantized once
    per activation type as `quantize_qdq` does it, the files named `prefix-...`."""

    def __init__(self, prefix: str, modules: Callable[[str], Any],
                 shapes: dict[str, tuple[int, ...]], exports: dict[str, dict[str, int]],
                 output: str = "logits") -> None:
        self.prefix, self.modules, self.shapes, self.exports = prefix, modules, shapes, exports
        self.output = output
        self.cases = [(name, exporter) for name, by in exports.items() for exporter in by]
        self.float_model = functools.cache(self._float_model)
        self.quantized_model = functools.cache(self._quantized_model)

    def _float_model(self, name: str, exporter: str) -> Path:
        return export_torch(self.modules(name), self.shapes[name],
                            workdir() / f"{self.prefix}-{name}-{exporter}.onnx",
                            self.exports[name][exporter], exporter.startswith("dynamo"),
                            self.output)

    def sample_inputs(self, name: str, count: int, seed: int) -> np.ndarray:
        """`count` seeded standard-normal inputs for `name`, stacked on axis 0."""
        return seeded_inputs(self.shapes[name], count, seed)

    def _quantized_model(self, name: str, exporter: str, activations: str = "int8") -> Path:
        batches = self.sample_inputs(name, CALIBRATION_BATCHES, CALIBRATION_SEED)
        return quantize_qdq(self.float_model(name, exporter), batches, activations)


def seeded_inputs(shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    """`count` seeded standard-normal samples of `shape` (its batch included), stacked on
    axis 0."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count * shape[0], *shape[1:])).astype(np.float32)


@functools.cache
def float_model(name: str, exporter: str = "legacy") -> Path:
    """The float model `name` exported by `exporter` ("dynamo" or "legacy")."""
    return export_torch(_torch_module(name), INPUT_SHAPES[name],
                        workdir() / f"{name}-{exporter}.onnx", EXPORTERS[exporter],
                        exporter == "dynamo")


def sample_inputs(name: str, count: int, seed: int) -> np.ndarray:
    """`count` seeded standard-normal inputs for `name`, stacked on axis 0."""
    return seeded_inputs(INPUT_SHAPES[name], count, seed)


@functools.cache
def quantized_model(name: str, exporter: str = "legacy", activations: str = "int8") -> Path:
    """The QDQ model of `name`: per-channel int8 weights, `activations` int8 or uint8."""
    batches = sample_inputs(name, CALIBRATION_BATCHES, CALIBRATION_SEED)
    return quantize_qdq(float_model(name, exporter), batches, activations,
                        INPUT_SHAPES[name][0])


def quantize_qdq(source: Path, batches: np.ndarray, activations: str,
                 per_feed: int = 1, symbolic_shapes: bool = True,
                 pre_process: bool = True) -> Path:
    """onnxruntime's recipe, as users run it: pre-process, then static QDQ quantization
    (per-channel int8 weights, int8 or uint8 activations) calibrated on `batches`, fed
    `per_feed` samples at a time (the model's batch). Without `symbolic_shapes` the
    pre-processing skips onnxruntime's symbolic shape inference, which fails on the
    legacy exporter's multi-head attention (its reshapes' shapes are computed); without
    `pre_process` the model goes to quantize_static as exported (a Linear over tokens
    stays a MatMul and an Add, each quantized)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    prepared = source.with_name(f"{source.stem}-prepared.onnx")
    if pre_process:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=not symbolic_shapes)
    else:
        prepared = source

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"input": batches[k:k + per_feed]}
                               for k in range(0, len(batches), per_feed)])

        def get_next(self):
            return next(self.feeds, None)

    path = source.with_name(f"{source.stem}-{activations}.onnx")
    quantize_static(
        str(prepared),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return path
