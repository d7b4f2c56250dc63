"""Partition benchmark: models larger than the chip, compiled and run in phases.

    python -m bench partition    (CIMC_PARTITION_MODELS=a,b picks models,
                                  CIMC_PARTITION_BUDGETS=0,0.5 the replication budgets,
                                  CIMC_PARTITION_BATCHES=1,16 the batches,
                                  CIMC_PARTITION_SIMULATE=0 skips the simulations)

Models: the CIFAR-shape ResNet-18, VGG-11 and MobileNetV2 of tests/backend_models.py
(torch export, seeded random weights, int8 QDQ) on `edge`, and VGG-16 at 224x224
(bench/capacity.py's float graph, quantized by cimc.frontend.quantize) on `pimcomp`.
Per model, target, replication budget inside the phases (`--replicate`), batch (1
and 16) and method (`--partition` greedy, optimal): the program's phases, the weight
bytes programmed per run, and per inference the latency of a run, the throughput and
the energy, with the throughput's ratio to greedy's. `sim` figures come from the
simulator running the program on one input (every image of the batch; the edge
models); `model` ones from the compile report's timing model per phase (VGG-16/224,
whose simulation takes hours), which the edge rows print beside the simulated
throughput (`modelled/s`) to show the model's error. The time to compile each
program is printed too.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

CASES = (("resnet18", "edge"), ("vgg11", "edge"), ("mobilenetv2", "edge"),
         ("vgg16_224", "pimcomp"))
MODELS = tuple(os.environ.get("CIMC_PARTITION_MODELS", ",".join(m for m, _ in CASES))
               .split(","))
BATCHES = tuple(int(b) for b in os.environ.get("CIMC_PARTITION_BATCHES", "1,16").split(","))
METHODS = ("greedy", "optimal")
# Replication inside each phase: off (replicate's default) and 0.5 (--replicate 0.5; at
# 0.9 the optimal VGG-16/224 batch-16 phases need more local memory than a pimcomp core
# has: the placer does not count line buffers).
BUDGETS = tuple(float(b) for b in os.environ.get("CIMC_PARTITION_BUDGETS", "0,0.5").split(","))
SIMULATE = os.environ.get("CIMC_PARTITION_SIMULATE", "1") != "0"
# Simulated only where a run takes at most minutes.
SIMULATED_TARGETS = ("edge",)


def model_path(name: str, workdir: Path) -> Path:
    if name == "vgg16_224":
        from bench.capacity import vgg16
        from cimc.frontend.quantize import quantize_onnx
        from cimc.ir.module import TensorType

        source, output = workdir / "vgg16-float.onnx", workdir / "vgg16-int8.onnx"
        vgg16(source)
        quantize_onnx(str(source), output, {"input": TensorType((1, 3, 224, 224), "f32")},
                      None)
        return output
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import backend_models

    return backend_models.quantized_model(name)


def main() -> None:
    import logging
    import warnings

    import numpy as np

    import cimc
    from cimc.api import prepare, program_report
    from cimc.diagnostics import CimcError

    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    header = ("model", "target", "replicate", "batch", "method", "phases", "programmed_B",
              "latency_ms", "inf/s", "vs_greedy", "nJ/inf", "from", "modelled/s", "compile_s")
    print("   " + " ".join(f"{h:>12}" for h in header))
    with tempfile.TemporaryDirectory(prefix="cimc-bench-partition-") as tmp:
        for name, target_name in CASES:
            if name not in MODELS:
                continue
            start = time.perf_counter()
            module = prepare(model_path(name, Path(tmp)))
            print(f"   {name:>12} {target_name:>12}  model built and imported in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            simulate = SIMULATE and target_name in SIMULATED_TARGETS
            for budget in BUDGETS:
                for batch in BATCHES:
                    greedy = 0.0
                    for method in METHODS:
                        begin = time.perf_counter()
                        try:
                            program = cimc.compile(module, target_name, batch=batch,
                                                   partition=method,
                                                   replicate=budget or None)
                        except CimcError as exc:
                            print(f"   {name:>12} {target_name:>12}  refused: {exc.message}")
                            break
                        seconds = time.perf_counter() - begin
                        report = program_report(program)
                        modelled = report["throughput"]
                        if simulate:
                            codes = {d.name: np.full((1, *d.shape), d.zp, dtype=np.int64)
                                     for d in program.isa_program.inputs}
                            report = program_report(program, codes, simulate=True)
                        throughput = report["throughput"]
                        greedy = greedy or throughput
                        row = (name, target_name, budget, batch, method,
                               report.get("phase_count", 1), report.get("programmed_bytes", 0),
                               f"{report['latency_us'] / 1e3:.2f}", f"{throughput:.2f}",
                               f"{throughput / greedy:.3f}", f"{report['energy_nj']:.0f}",
                               "sim" if simulate else "model", f"{modelled:.2f}",
                               f"{seconds:.1f}")
                        print("   " + " ".join(f"{v!s:>12}" for v in row), flush=True)


if __name__ == "__main__":
    main()
