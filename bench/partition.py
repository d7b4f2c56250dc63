"""Partition benchmark: models larger than the chip, split into phases.

    python -m bench partition    (CIMC_PARTITION_MODELS=a,b picks models,
                                  CIMC_PARTITION_BUDGETS=0,0.9 the replication budgets)

Models: the CIFAR-shape ResNet-18, VGG-11 and MobileNetV2 of tests/backend_models.py
(torch export, seeded random weights, int8 QDQ) on `edge`, and VGG-16 at 224x224
(bench/capacity.py's float graph, quantized by cimc.frontend.quantize) on `pimcomp`.
Per model, target, replication budget inside the phases (0 and 0.9), batch (1 and 16)
and method (greedy, optimal): the phases, the
weight bytes programmed and the bytes spilled per batch, and the phase model's
estimated throughput and its ratio to greedy's (cimc/analysis/phases.py). These are
the model's estimates, not simulated figures: phases do not compile yet. The time
to import, quantize, lower, tile and partition each model is printed too.
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
BATCHES = (1, 16)
METHODS = ("greedy", "optimal")
# Replication inside each phase: off (replicate's default) and 0.9 (--replicate 0.9).
BUDGETS = tuple(float(b) for b in os.environ.get("CIMC_PARTITION_BUDGETS", "0,0.9").split(","))


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

    from cimc.analysis.phases import partition
    from cimc.diagnostics import CimcError
    from cimc.frontend.importer import import_onnx
    from cimc.pass_manager import parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND
    from cimc.targets import load_target

    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    header = ("model", "target", "replicate", "batch", "method", "phases", "programmed_B",
              "spilled_B", "est_inf/s", "vs_greedy")
    print("   estimated by the phase model (phases do not compile yet)")
    print("   " + " ".join(f"{h:>12}" for h in header))
    with tempfile.TemporaryDirectory(prefix="cimc-bench-partition-") as tmp:
        for name, target_name in CASES:
            if name not in MODELS:
                continue
            start = time.perf_counter()
            path = model_path(name, Path(tmp))
            built = time.perf_counter()
            target = load_target(target_name)
            module = import_onnx(str(path))
            run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
            run_pipeline(module, parse_pipeline("lower,tile", target))
            try:
                plans = {(r, b, m): partition(module, target, m, b, r)
                         for r in BUDGETS for b in BATCHES for m in METHODS}
            except CimcError as exc:
                print(f"   {name:>12} {target_name:>12}  refused: {exc.message}")
                continue
            done = time.perf_counter()
            for (budget, batch, method), plan in plans.items():
                greedy = plans[(budget, batch, "greedy")]
                row = (name, target_name, budget, batch, method, len(plan.phases),
                       sum(p.weight_bytes for p in plan.phases),
                       batch * sum(p.spill_bytes for p in plan.phases),
                       f"{plan.throughput:.1f}", f"{plan.throughput / greedy.throughput:.3f}")
                print("   " + " ".join(f"{v!s:>12}" for v in row), flush=True)
            print(f"   {name:>12} {target_name:>12}  model built in {built - start:.1f} s; "
                  f"import, lower, tile and partition in {done - built:.1f} s", flush=True)


if __name__ == "__main__":
    main()
