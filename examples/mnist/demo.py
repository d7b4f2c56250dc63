"""The MNIST demo behind `make demo`: compile, emit the data header, simulate, compare.

It also prints the compile report as tables (`cimc report`: figures and the per-layer
table), draws it (`cimc plot`: out/mnist/plots/mesh.png, links.png and layers.png;
`cimc sim --plots`: the simulated run as a Gantt chart, pipeline.png), and sweeps
the ADC bits with and without cell noise over the same digits (`cimc sweep --serial`:
out/mnist/sweep.csv and plots/accuracy.png).

Uses only what is bundled here (no torch): the QDQ model and the first 200 of
the 1,000 held-out digits written by train.py. Prints how the simulated logits
compare with the exact oracle on the same quantized model (onnxruntime with graph
optimizations disabled, cimc.reference.oracle), the accuracies, and the figures of the
compile and simulation reports. onnxruntime's default optimized session is
shown too, labelled: its int8 kernels are not exact on CPUs without VNNI.
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
         "--outputs", str(out / "logits.npy"), "--report", str(out / "sim.json"),
         "--plots", str(out / "plots"))
    cimc("report", str(out / "compile.json"))
    cimc("plot", str(out / "compile.json"), str(out / "plots"))
    # In this process (--serial): a local Ray instance takes seconds to start.
    cimc("sweep", str(model), "--inputs", str(out / "digits.npy"), "--labels",
         str(out / "labels.npy"), "--target", args.target, "--adc-bits", "5..9", "--noise",
         "0,0.05", "--serial", "-o", str(out / "sweep.csv"), "--plots", str(out / "plots"))

    simulated = np.load(out / "logits.npy").reshape(len(images), -1)
    from cimc.reference.oracle import ExactOracle

    exact = ExactOracle(model).run_samples(images)
    default = ExactOracle(model, optimized=True).run_samples(images)
    sim_class, exact_class = simulated.argmax(1), exact.argmax(1)
    report = json.loads((out / "compile.json").read_text())
    sim_report = json.loads((out / "sim.json").read_text())

    print()
    print(f"digits simulated            {len(images)}")
    print(f"max |difference| of logits, simulator vs exact oracle  "
          f"{np.max(np.abs(simulated - exact)):.4f}")
    print(f"same class, simulator vs exact oracle  {np.mean(sim_class == exact_class):.3f}")
    print(f"accuracy, cimc simulator    {np.mean(sim_class == labels):.3f}")
    print(f"accuracy, exact oracle      {np.mean(exact_class == labels):.3f}")
    print(f"default onnxruntime session max |difference| from the oracle "
          f"{np.max(np.abs(default - exact)):.4f} (its int8 kernels; not an oracle)")
    print()
    print(f"target                      {report.get('target')}")
    for key in ("crossbars_used", "crossbars_available", "cores_used", "utilization",
                "hop_bytes", "instructions", "program_bytes", "cycles", "latency_us",
                "throughput", "energy_nj"):
        value = report.get(key)
        print(f"{key:<28}{value:.4g}" if isinstance(value, float) else f"{key:<28}{value}")
    print(f"(cycles, latency, throughput and energy above: {report['figures_from'][:12]}; "
          f"simulated: {sim_report['cycles']} cycles)")
    print(f"simulated batch             {sim_report['batch']} digits, "
          f"{sim_report['instructions']} instructions per inference")
    print(f"\nwrote {out / 'prog.s'}, {out / 'mnist_data.h'}, {out / 'sweep.csv'}, "
          f"{out / 'plots'}; demo took "
          f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
