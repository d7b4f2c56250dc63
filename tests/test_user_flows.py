"""The flows a user runs from the README: the MNIST demo, compiling a float
model, and the report keys that docs/backend.md promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cimc.cli import main

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist"
REPORT_KEYS = {
    "target", "crossbars_used", "crossbars_available", "cores_used", "utilization",
    "hop_bytes", "cycles", "throughput", "energy_nj", "instructions", "program_bytes",
}


def digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(MNIST / "test_digits.npz")
    return data["images"][:count].astype(np.float32)[:, None] / 255.0, data["labels"][:count]


def test_mnist_demo_simulates_the_bundled_digits_as_the_exact_oracle_does(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(MNIST / "demo.py"), "--count", "40", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    lines = dict(line.rsplit(None, 1) for line in result.stdout.splitlines()
                 if line.startswith(("accuracy", "same class", "max |difference|")))
    assert float(lines["same class, simulator vs exact oracle"]) == 1.0
    assert float(lines["max |difference| of logits, simulator vs exact oracle"]) == 0.0
    assert float(lines["accuracy, cimc simulator"]) >= 0.9
    assert (tmp_path / "mnist_data.h").exists() and (tmp_path / "prog.img").exists()
    # The ADC-bits sweep: at 9 bits (isaac's exact threshold), sigma 0, the exact result.
    rows = [line.split(",") for line in (tmp_path / "sweep.csv").read_text().splitlines()]
    at_nine = dict(zip(rows[0], next(r for r in rows if r[3] == "9" and r[5] == "0.0"),
                       strict=True))
    assert float(at_nine["agreement"]) == 1.0
    assert float(at_nine["accuracy"]) == float(lines["accuracy, cimc simulator"])
    assert (tmp_path / "plots" / "accuracy.png").exists()


def test_compile_report_has_the_documented_figures(tmp_path: Path) -> None:
    x, _ = digits(2)
    np.save(tmp_path / "x.npy", x)
    assert main([str(MNIST / "mnist_cnn_qdq.onnx"), "-o", str(tmp_path / "p.s"),
                 "--inputs", str(tmp_path / "x.npy"), "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["crossbars_used"] <= report["crossbars_available"]
    assert 0 < report["utilization"] <= 1
    assert report["cycles"] > 0 and report["energy_nj"] > 0
    assert {"import-onnx", "lower", "schedule"} <= report["pass_seconds"].keys()


def test_run_report_holds_compile_and_simulated_figures(tmp_path: Path) -> None:
    x, _ = digits(3)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(MNIST / "mnist_cnn_qdq.onnx"), "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["engine"] == "sim" and report["batch"] == 3
    assert np.load(tmp_path / "y.npy").shape == (3, 10)


def test_float_model_compiles_with_a_warning_unless_calibrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(MNIST / "mnist_cnn.onnx")
    assert main([model, "-o", str(tmp_path / "random.s")]) == 0
    assert "accuracy of the quantized model is not meaningful" in capsys.readouterr().err
    x, labels = digits(40)
    np.save(tmp_path / "x.npy", x)
    assert main([model, "-o", str(tmp_path / "calibrated.s"), "--calibrate",
                 str(tmp_path / "x.npy")]) == 0
    assert "not meaningful" not in capsys.readouterr().err
    assert main(["run", model, "--calibrate", str(tmp_path / "x.npy"), "--inputs",
                 str(tmp_path / "x.npy"), "--outputs", str(tmp_path / "y.npy")]) == 0
    accuracy = np.mean(np.load(tmp_path / "y.npy").argmax(1) == labels)
    assert accuracy >= 0.9  # calibrated on real digits, the quantized model still reads them
