"""Compile benchmark: per model and target, compile time, peak memory and the
report figures (crossbars, utilization, traffic, simulated cycles and energy).

    python -m bench compile            (the test models; CIMC_BENCH_LARGE=1 adds
                                        ResNet-18, MobileNetV2 and VGG-11 at 32x32)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

TARGETS = ("tiny", "isaac", "pimcomp")
COLUMNS = ("model", "target", "compile_s", "peak_MiB", "crossbars", "util", "cores",
           "hop_bytes", "cycles", "energy_uJ", "instr")


def _models() -> list[tuple[str, Path]]:
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    import backend_models
    import models

    found = [(name, models.quantized_model(name)) for name in ("mnist_cnn", "mlp", "lenet5",
                                                                "residual", "separable")]
    found += [(name, backend_models.quantized_model(name)) for name in ("mnist_tiny", "mlp_tiny")]
    if os.environ.get("CIMC_BENCH_LARGE"):
        found += [(name, backend_models.quantized_model(name))
                  for name in ("resnet18", "mobilenetv2", "vgg11")]
    return found


def measure(model: Path, target: str, workdir: Path) -> dict[str, object]:
    """Compile `model` for `target` (timed, memory traced) and build its report."""
    from cimc.api import compile as compile_program
    from cimc.api import program_report
    from cimc.diagnostics import CimcError

    prog = workdir / "prog.s"
    tracemalloc.start()
    start = time.perf_counter()
    try:
        compiled = compile_program(model, target, path=prog)
        compiled.save(prog)
    except CimcError as exc:
        tracemalloc.stop()
        return {"error": exc.message}
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    report = program_report(compiled)
    return {"compile_s": seconds, "peak_MiB": peak / 2**20, **report}


def main() -> None:
    from cimc.api import Program  # noqa: F401  (import cost outside timing)

    print("  " + " ".join(f"{c:>11}" for c in COLUMNS))
    with tempfile.TemporaryDirectory(prefix="cimc-bench-") as tmp:
        for name, path in _models():
            for target in TARGETS:
                row = measure(path, target, Path(tmp))
                if "error" in row:
                    print(f"  {name:>11} {target:>11}  does not fit: {row['error'][:90]}")
                    continue
                values = (name, target, f"{row['compile_s']:.2f}", f"{row['peak_MiB']:.1f}",
                          row["crossbars_used"], f"{row['utilization']:.2f}", row["cores_used"],
                          row["hop_bytes"], row["cycles"], f"{row['energy_nj'] / 1000:.2f}",
                          row["instructions"])
                print("  " + " ".join(f"{v!s:>11}" for v in values), flush=True)


if __name__ == "__main__":
    main()
