"""Small torch sequence classifiers with nn.LSTM / nn.GRU (batch_first; one or two layers;
forward or bidirectional; the last time step of the top layer, or its last states h_n,
-> Linear), exported and
quantized as tests/models.py does it: onnxruntime QDQ, per-channel int8 weights, seeded
weights and calibration data. onnxruntime's quantizer leaves LSTM and GRU float (they
have no QDQ quantizer), so the QDQ model quantizes only from the Linear on."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from models import (
    CALIBRATION_BATCHES,
    CALIBRATION_SEED,
    export_torch,
    quantize_qdq,
    seeded_inputs,
    workdir,
)

STEPS, FEATURES, HIDDEN, CLASSES = 20, 16, 32, 5
INPUT_SHAPE = (1, STEPS, FEATURES)
# name -> (torch layer, layers, bidirectional); the classifier reads Y's last time step,
# or with "_hn" the last hidden state of both directions of the top layer (h_n).
LAYERS: dict[str, tuple[str, int, bool]] = {
    "lstm": ("LSTM", 1, False),
    "gru": ("GRU", 1, False),
    "lstm2_bi": ("LSTM", 2, True),
    "gru2_bi": ("GRU", 2, True),
    "lstm2_bi_hn": ("LSTM", 2, True),
    "gru2_bi_hn": ("GRU", 2, True),
}
EXPORTERS = {"legacy": 13, "dynamo": 18}
CASES = [(name, exporter) for name in LAYERS for exporter in EXPORTERS]


def _torch_module(name: str):  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)
    layer, layers, bidirectional = LAYERS[name]

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(nn, layer)(FEATURES, HIDDEN, num_layers=layers,
                                          batch_first=True, bidirectional=bidirectional)
            self.fc = nn.Linear(HIDDEN * (2 if bidirectional else 1), CLASSES)

        def forward(self, x):
            y, state = self.rnn(x)
            if not name.endswith("_hn"):
                return self.fc(y[:, -1])
            h = state[0] if layer == "LSTM" else state
            return self.fc(torch.cat([h[-2], h[-1]], 1))

    return Classifier().eval()


@functools.cache
def float_model(name: str, exporter: str) -> Path:
    return export_torch(_torch_module(name), INPUT_SHAPE,
                        workdir() / f"rnn-{name}-{exporter}.onnx", EXPORTERS[exporter],
                        exporter == "dynamo")


@functools.cache
def batched_model(name: str, exporter: str, batch: int = 4) -> Path:
    """Classifier `name` exported with a batch of `batch` sequences baked into its shapes,
    int8 QDQ calibrated `batch` sequences at a time."""
    path = export_torch(_torch_module(name), (batch, *INPUT_SHAPE[1:]),
                        workdir() / f"rnn-{name}-{exporter}-batch{batch}.onnx",
                        EXPORTERS[exporter], exporter == "dynamo")
    return quantize_qdq(path, sample_inputs(CALIBRATION_BATCHES * batch, CALIBRATION_SEED),
                        "int8", per_feed=batch)


def sample_inputs(count: int, seed: int) -> np.ndarray:
    """`count` seeded standard-normal sequences, stacked on axis 0."""
    return seeded_inputs(INPUT_SHAPE, count, seed)


@functools.cache
def quantized_model(name: str, exporter: str) -> Path:
    batches = sample_inputs(CALIBRATION_BATCHES, CALIBRATION_SEED)
    return quantize_qdq(float_model(name, exporter), batches, "int8")


# A keyword-spotting GRU at the size such models have: 49 frames of 40 MFCCs, hidden 64,
# 12 classes (the classifier reads the last step).
KWS_STEPS, KWS_FEATURES, KWS_HIDDEN, KWS_CLASSES = 49, 40, 64, 12


def kws_inputs(count: int, seed: int) -> np.ndarray:
    return seeded_inputs((1, KWS_STEPS, KWS_FEATURES), count, seed)


@functools.cache
def kws_model() -> Path:
    """The keyword-spotting GRU, legacy export (opset 13), int8 QDQ (its GRU float)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Spotter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(KWS_FEATURES, KWS_HIDDEN, batch_first=True)
            self.fc = nn.Linear(KWS_HIDDEN, KWS_CLASSES)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    path = export_torch(Spotter().eval(), (1, KWS_STEPS, KWS_FEATURES),
                        workdir() / "rnn-kws-gru.onnx", 13, False)
    return quantize_qdq(path, kws_inputs(CALIBRATION_BATCHES, CALIBRATION_SEED), "int8")


# Recurrent models as people also write them (input [1, STEPS, FEATURES], HIDDEN units):
# a GRU tagger (the Linear on every step's output: [1, STEPS, CLASSES]); a GRU averaged
# over time before the Linear; a keyword spotter with a Conv1d front end (Conv1d -> ReLU
# over the features as channels, back to time-major, GRU, its h_n -> Linear); a
# bidirectional LSTM averaged over time; two GRU layers whose last step goes through a
# Tanh before the Linear; a GRU pooled by attention (a Linear scores each step, a softmax
# over time weights the steps, their weighted sum goes to the Linear).
SHAPES = ("tagger", "mean", "crnn", "bi_mean", "tanh", "pool")


def _shaped_module(name: str):  # -> torch.nn.Module
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Shaped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width = 24 if name == "crnn" else FEATURES
            self.conv = nn.Conv1d(FEATURES, width, 3, padding=1) if name == "crnn" else None
            if name == "bi_mean":
                self.rnn = nn.LSTM(width, HIDDEN, batch_first=True, bidirectional=True)
            else:
                self.rnn = nn.GRU(width, HIDDEN, num_layers=2 if name == "tanh" else 1,
                                  batch_first=True)
            self.fc = nn.Linear(HIDDEN * (2 if name == "bi_mean" else 1), CLASSES)
            self.score = nn.Linear(HIDDEN, 1) if name == "pool" else None

        def forward(self, x):
            if name == "crnn":
                x = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
                return self.fc(self.rnn(x)[1][-1])
            y = self.rnn(x)[0]
            if name == "tagger":
                return self.fc(y)
            if name == "tanh":
                return self.fc(torch.tanh(y[:, -1]))
            if name == "pool":
                return self.fc((torch.softmax(self.score(y), 1) * y).sum(1))
            return self.fc(y.mean(1))

    return Shaped().eval()


@functools.cache
def shaped_model(name: str, exporter: str) -> Path:
    """`name` of SHAPES exported by `exporter`, int8 QDQ (its recurrent layers float)."""
    path = export_torch(_shaped_module(name), INPUT_SHAPE,
                        workdir() / f"rnn-{name}-{exporter}.onnx", EXPORTERS[exporter],
                        exporter == "dynamo")
    return quantize_qdq(path, sample_inputs(CALIBRATION_BATCHES, CALIBRATION_SEED), "int8")


def time_major_inputs(count: int, seed: int) -> np.ndarray:
    """`count` seeded sequences [STEPS, 1, FEATURES] (torch's default layout), stacked on
    axis 0 as a run takes them: [count·STEPS, 1, FEATURES]."""
    return sample_inputs(count, seed).reshape(count * STEPS, 1, FEATURES)


@functools.cache
def time_major_model(layer: str, exporter: str, tagger: bool) -> Path:
    """A two-layer bidirectional `layer` (LSTM or GRU) in torch's default time-major layout
    (batch_first=False: input [STEPS, 1, FEATURES], axis 0 the time), its last step to
    the Linear, or with `tagger` the Linear on every step ([STEPS, 1, CLASSES])."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class TimeMajor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(nn, layer)(FEATURES, HIDDEN, num_layers=2, bidirectional=True)
            self.fc = nn.Linear(2 * HIDDEN, CLASSES)

        def forward(self, x):
            y = self.rnn(x)[0]
            return self.fc(y if tagger else y[-1])

    path = export_torch(TimeMajor().eval(), (STEPS, 1, FEATURES),
                        workdir() / f"rnn-time-major-{layer}-{tagger}-{exporter}.onnx",
                        EXPORTERS[exporter], exporter == "dynamo")
    return quantize_qdq(path, time_major_inputs(CALIBRATION_BATCHES, CALIBRATION_SEED),
                        "int8", per_feed=STEPS)
