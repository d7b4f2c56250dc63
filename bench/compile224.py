"""Compiling ImageNet-size models for `pimcomp`: ResNet-18, ResNet-50 and
MobileNetV2 at 224x224 (tests/backend_models.py: torch export with seeded
random weights, int8 QDQ by onnxruntime's quantize_static).

    python -m bench compile224   (CIMC_BENCH_REPEAT=N runs per figure, default 3;
                                  CIMC_BENCH_SIMULATE=0 skips the simulations;
                                  CIMC_BENCH_BESIDE='COMMAND {model}' also times another
                                  compiler on each model, {model} = resnet18, resnet50 or
                                  mobilenetv2)

First table, `cimc MODEL -o prog.s --target pimcomp --report r.json` as a user runs
it, in a child process: median wall time and peak resident memory, and the same
with `--pipeline throughput` (ratio to the default). Second table, per placer:
hop_bytes (ratio to sequential), the cycles and throughput the report gives (the
timing model) and the simulator's (one simulated inference), and the model's error.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("resnet18_224", "resnet50_224", "mobilenetv2_224")
PLACERS = ("sequential", "cpsat", "snake", "anneal")  # sequential first: the reference
REPEAT = int(os.environ.get("CIMC_BENCH_REPEAT", "3"))
SIMULATE = os.environ.get("CIMC_BENCH_SIMULATE", "1") != "0"
BESIDE = os.environ.get("CIMC_BENCH_BESIDE", "")

# The child prints its own peak: VmHWM of its address space (ru_maxrss would carry the
# parent's peak across fork and exec).
_CHILD = """
import sys
from cimc.cli import main
status = main(sys.argv[1:])
with open("/proc/self/status") as status_file:
    peak = next(line.split()[1] for line in status_file if line.startswith("VmHWM"))
print("maxrss", peak, file=sys.stderr)
sys.exit(status)
"""


def timed_compile(model: Path, workdir: Path, *extra: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `cimc` compile with a report, in a child."""
    args = [sys.executable, "-c", _CHILD, str(model), "-o", str(workdir / "prog.s"),
            "--target", "pimcomp", "--report", str(workdir / "r.json"), *extra]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    rss = next(int(line.split()[1]) for line in done.stderr.splitlines()
               if line.startswith("maxrss"))
    return wall, rss / 1024


def timed_command(command: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of another program, measured by GNU time."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", "sh", "-c", command],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    rss = next((int(line.split()[1]) for line in done.stderr.splitlines()
                if line.startswith("maxrss")), 0)
    return wall, rss / 1024


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import backend_models

    import cimc

    paths = {name: backend_models.quantized_model(name) for name in MODELS}
    columns = ("model", "wall_s", "peak_MB", "thru_wall_s", "thru/def")
    if BESIDE:
        columns += ("beside_s", "beside_MB", "cimc/beside")
    print("  " + " ".join(f"{c:>15}" for c in columns))
    with tempfile.TemporaryDirectory(prefix="cimc-bench-") as tmp:
        for name, path in paths.items():
            runs = [timed_compile(path, Path(tmp)) for _ in range(REPEAT)]
            wall = statistics.median(w for w, _ in runs)
            rss = statistics.median(r for _, r in runs)
            thru = statistics.median(timed_compile(path, Path(tmp), "--pipeline",
                                                   "throughput")[0] for _ in range(REPEAT))
            values = [name, f"{wall:.2f}", f"{rss:.0f}", f"{thru:.2f}", f"{thru / wall:.2f}"]
            if BESIDE:
                command = BESIDE.format(model=name.removesuffix("_224"))
                other = [timed_command(command) for _ in range(REPEAT)]
                beside = statistics.median(w for w, _ in other)
                values += [f"{beside:.2f}", f"{max(r for _, r in other):.0f}",
                           f"{wall / beside:.2f}"]
            print("  " + " ".join(f"{v:>15}" for v in values), flush=True)

    print()
    columns = ("model", "placer", "hop_bytes", "vs_seq", "cycles", "sim_cycles", "cyc_err",
               "thru_per_s", "sim_thru", "thru_err")
    print("  " + " ".join(f"{c:>12}" for c in columns))
    for name, path in paths.items():
        module = cimc.prepare(path)
        sequential = 0
        for placer in PLACERS:
            program = cimc.compile(module, "pimcomp", placer=placer)
            report = program.report
            sequential = sequential or report["hop_bytes"]
            values = [name, placer, report["hop_bytes"],
                      f"{report['hop_bytes'] / sequential:.2f}", report["cycles"], "", "",
                      f"{report['throughput']:.1f}", "", ""]
            if SIMULATE:
                simulated = program.simulated_report
                values[5] = simulated["cycles"]
                values[6] = f"{report['cycles'] / simulated['cycles'] - 1:+.2%}"
                values[8] = f"{simulated['throughput']:.1f}"
                values[9] = f"{report['throughput'] / simulated['throughput'] - 1:+.2%}"
            print("  " + " ".join(f"{v!s:>12}" for v in values), flush=True)
