"""Backend benchmark: where a compile's backend time goes, for ResNet-18 at 224x224.

    python -m bench backend      (CIMC_BENCH_MODELS=a,b picks models of
                                  tests/backend_models.py; CIMC_BENCH_TARGETS=t,u targets;
                                  CIMC_BENCH_REPEAT=N runs, default 3)

The frontend runs once per model; each run compiles a copy of its module with the
sequential placer (the placer's search is benchmarked in `bench placement`).
`schedule+emit_s` is the backend's time after placement: schedule, code generation
and the program text and image in memory (everything of `cimc.compile` after the
place pass); `codegens` how many times one compile generated the code (once: schedule
keeps it with the module for emission and the report). Medians of the runs.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

MODELS = tuple(os.environ.get("CIMC_BENCH_MODELS", "resnet18_224").split(","))
TARGETS = tuple(os.environ.get("CIMC_BENCH_TARGETS", "pimcomp").split(","))
REPEAT = int(os.environ.get("CIMC_BENCH_REPEAT", "3"))
BEFORE_SCHEDULE = ("lower", "tile", "replicate", "place")
COLUMNS = ("model", "target", "runs", "backend_s", "place_s", "schedule+emit_s", "codegens")


def main() -> None:
    import cimc
    import cimc.codegen.generate
    import cimc.emit.report  # noqa: F401  (bind its imports before counting)
    import cimc.passes.schedule  # noqa: F401

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import backend_models
    from calls import count_calls

    calls = count_calls(cimc.codegen.generate.generate)

    print("  " + " ".join(f"{c:>15}" for c in COLUMNS))
    for name in MODELS:
        module = cimc.prepare(backend_models.quantized_model(name))
        for target in TARGETS:
            totals, places, rests = [], [], []
            calls.clear()
            for _ in range(REPEAT):
                start = time.perf_counter()
                program = cimc.compile(module, target, placer="sequential")
                total = time.perf_counter() - start
                before = sum(t.seconds for t in program.timings if t.name in BEFORE_SCHEDULE)
                totals.append(total)
                places.append(sum(t.seconds for t in program.timings if t.name == "place"))
                rests.append(total - before)
            values = (name, target, REPEAT, *(f"{statistics.median(v):.2f}"
                                               for v in (totals, places, rests)),
                      len(calls) // REPEAT)
            print("  " + " ".join(f"{v!s:>15}" for v in values), flush=True)


if __name__ == "__main__":
    main()
