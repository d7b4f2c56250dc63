"""The MNIST demo behind `make demo`: compile, emit the data header, simulate, compare.

Uses only what is bundled here (no torch): the QDQ model and 200 held-out
digits written by train.py. Prints the simulated accuracy next to
onnxruntime's on the same quantized model, how often the two agree, and the
figures of the compile and simulation reports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def cimc(*args: str) -> None:
    """Run the cimc command line as a user would; stop the demo if it fails."""
    command = [sys.executable, "-m", "cimc", *args]
    print("$ cimc " + " ".join(args), flush=True)
    if subprocess.run(command).returncode != 0:
        sys.exit(1)


def onnxruntime_logits(model: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in images])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="isaac")
    parser.add_argument("--count", type=int, default=200, help="digits to simulate")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "mnist")
    args = parser.parse_args()

    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    digits = np.load(HERE / "test_digits.npz")
    images = digits["images"][: args.count].astype(np.float32)[:, None] / 255.0
    labels = digits["labels"][: args.count]
    np.save(out / "digits.npy", images)
    np.save(out / "labels.npy", labels)
    model = HERE / "mnist_cnn_qdq.onnx"

    cimc(str(model), "-o", str(out / "prog.s"), "--target", args.target,
         "--emit-data", str(out / "mnist_data.h"), "--inputs", str(out / "digits.npy"),
         "--labels", str(out / "labels.npy"), "--count", "10",
         "--report", str(out / "compile.json"))
    cimc("sim", str(out / "prog.s"), "--inputs", str(out / "digits.npy"),
         "--outputs", str(out / "logits.npy"), "--report", str(out / "sim.json"))

    simulated = np.load(out / "logits.npy").reshape(len(images), -1)
    reference = onnxruntime_logits(model, images)
    sim_class, ort_class = simulated.argmax(1), reference.argmax(1)
    report = json.loads((out / "compile.json").read_text())
    sim_report = json.loads((out / "sim.json").read_text())

    print()
    print(f"digits simulated            {len(images)}")
    print(f"accuracy, cimc simulator    {np.mean(sim_class == labels):.3f}")
    print(f"accuracy, onnxruntime (QDQ) {np.mean(ort_class == labels):.3f}")
    print(f"same class as onnxruntime   {np.mean(sim_class == ort_class):.3f}")
    print(f"max |difference| of logits  {np.max(np.abs(simulated - reference)):.4f}")
    print()
    print(f"target                      {report.get('target')}")
    for key in ("crossbars_used", "crossbars_available", "cores_used", "utilization",
                "hop_bytes", "instructions", "program_bytes", "cycles", "latency_us",
                "throughput", "energy_nj"):
        value = report.get(key)
        print(f"{key:<28}{value:.4g}" if isinstance(value, float) else f"{key:<28}{value}")
    print(f"simulated batch             {sim_report['batch']} digits, "
          f"{sim_report['instructions']} instructions per inference")
    print(f"\nwrote {out / 'prog.s'}, {out / 'mnist_data.h'}; demo took "
          f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
