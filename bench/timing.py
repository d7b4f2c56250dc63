"""The timing model against the simulator: per bench model, target and pipeline
mode, the cycles and throughput of the compile report (cimc/analysis/timing.py)
and of one simulated run, the model's error, and the time each takes.

    python -m bench timing     (CIMC_BENCH_LARGE=1 adds ResNet-18, MobileNetV2 and
                                VGG-11 at 32x32; the 224x224 models are in
                                `bench compile224`)
"""

from __future__ import annotations

import time

from bench.compile import TARGETS, _models

COLUMNS = ("model", "target", "pipeline", "cycles", "sim_cycles", "cyc_err", "thru_err",
           "energy_err", "model_s", "sim_s")


def main() -> None:
    import cimc
    from cimc.diagnostics import CimcError

    print("  " + " ".join(f"{c:>11}" for c in COLUMNS))
    worst = 0.0
    for name, path in _models():
        for target in TARGETS:
            for pipeline in ("latency", "throughput"):
                try:
                    program = cimc.compile(path, target, pipeline=pipeline)
                except CimcError:
                    continue  # does not fit: bench compile says why
                start = time.perf_counter()
                modelled = program.report
                middle = time.perf_counter()
                simulated = program.simulated_report
                end = time.perf_counter()
                errors = [modelled[k] / simulated[k] - 1
                          for k in ("cycles", "throughput", "energy_nj")]
                worst = max(worst, *(abs(e) for e in errors[:2]))
                values = (name, target, pipeline, modelled["cycles"], simulated["cycles"],
                          *(f"{e:+.2%}" for e in errors), f"{middle - start:.2f}",
                          f"{end - middle:.2f}")
                print("  " + " ".join(f"{v!s:>11}" for v in values), flush=True)
    print(f"   largest error of cycles or throughput: {worst:.2%} (the goal: within 5%)")
