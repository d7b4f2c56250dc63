"""Schedule benchmark: per model and target, with and without replication and in
both pipeline modes, the simulated figures next to their bounds.

    python -m bench schedule        (small test models; CIMC_BENCH_LARGE=1 adds the
                                     model-scale CNNs of tests/backend_models.py:
                                     ResNet-18, MobileNetV2, VGG-16, VGG-19 at 32x32;
                                     CIMC_BENCH_MODELS=a,b picks models, e.g.
                                     resnet18_224; CIMC_BENCH_TARGETS=pimcomp picks
                                     targets; CIMC_BENCH_STREAM=S streams S images for
                                     the throughput measurement, default 3)

Columns, in units that sit beside PIMCOMP-NN's evaluation output:
* latency mode: `latency_ns` simulated (one inference), `lat_bound_ns` the critical
  path bound, `lat_ratio` = latency / bound (<= 1.25 is the goal);
* throughput mode: `period` = steady-state cycles between consecutive inferences,
  measured as (cycles of a run of S streamed inferences - cycles of 1) / (S - 1);
  `thr_per_s` = clock / period, `thr_bound` the slowest-stage bound, `thr_ratio` =
  throughput / bound (>= 0.9 is the goal); `bound_stage` says which stage bounds;
  `xbar_bound` the hardware's throughput limit beyond this schedule (the busiest
  crossbar's MVM time; a core here runs its groups' rows one after the other);
* `mvms` = crossbar MVMs per inference (windows x blocks), `hop_bytes` per
  inference, `crossbars` used.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

COLUMNS = ("model", "target", "repl", "crossbars", "mvms", "hop_bytes", "latency_ns",
           "lat_bound_ns", "lat_ratio", "period", "thr_per_s", "thr_bound", "thr_ratio",
           "bound_stage", "xbar_bound")
TARGETS = tuple(os.environ.get("CIMC_BENCH_TARGETS", "isaac,pimcomp").split(","))
STREAM = int(os.environ.get("CIMC_BENCH_STREAM", "3"))
LARGE = ("resnet18", "mobilenetv2", "vgg16", "vgg19")


def _models() -> list[tuple[str, Path]]:
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    import backend_models
    import models

    if os.environ.get("CIMC_BENCH_MODELS"):
        return [(name, backend_models.quantized_model(name))
                for name in os.environ["CIMC_BENCH_MODELS"].split(",")]
    found = [(name, models.quantized_model(name)) for name in ("mnist_cnn", "residual",
                                                                "separable")]
    if os.environ.get("CIMC_BENCH_LARGE"):
        found += [(name, backend_models.quantized_model(name)) for name in LARGE]
    return found


def _simulate(model: Path, target: str, prog: Path, pipeline: str, stream: int,
              budget: float) -> tuple[dict, dict, object]:
    from cimc.api import compile as compile_program
    from cimc.emit.report import schedule_bounds, static_figures
    from cimc.isa.assembler import assemble_file
    from cimc.isa.image import load_image
    from cimc.isa.simulator import run_program


    compiled = compile_program(model, target, pipeline=pipeline, stream=stream, replicate=budget,
                               path=prog)
    compiled.save(prog)
    program = assemble_file(prog)
    inputs = {p.name: _zero_point_input(p) for p in program.inputs}
    _, report = run_program(program, load_image(prog.with_suffix(".img")), compiled.target,
                            inputs)
    figures = static_figures(compiled.module, compiled.target, compiled.cores)
    figures.update(schedule_bounds(compiled.module, compiled.target))
    return report, figures, compiled.target


def _zero_point_input(port):  # -> np.ndarray
    import numpy as np

    dtype = np.int8 if port.dtype == "i8" else np.uint8
    return np.full((1, *port.shape), port.zp, dtype=dtype)


def measure(model: Path, target: str, budget: float, workdir: Path) -> dict[str, object]:
    lat, figures, tgt = _simulate(model, target, workdir / "lat.s", "latency", 1, budget)
    one, _, _ = _simulate(model, target, workdir / "t1.s", "throughput", 1, budget)
    many, _, _ = _simulate(model, target, workdir / "tS.s", "throughput", STREAM, budget)
    period = (many["cycles"] - one["cycles"]) / (STREAM - 1)
    ns = 1e3 / tgt.clock_mhz  # type: ignore[attr-defined]
    thr = tgt.clock_mhz * 1e6 / period if period > 0 else 0.0  # type: ignore[attr-defined]
    return {
        "crossbars": figures["crossbars_used"], "mvms": figures["mvm_count"],
        "hop_bytes": figures["hop_bytes"], "latency_ns": lat["cycles"] * ns,
        "lat_bound_ns": figures["latency_bound_ns"],
        "lat_ratio": lat["cycles"] / max(figures["latency_bound_cycles"], 1),
        "period": period, "thr_per_s": thr, "thr_bound": figures["throughput_bound"],
        "thr_ratio": thr / figures["throughput_bound"] if figures["throughput_bound"] else 0.0,
        "bound_stage": figures["bound_stage"],
        "xbar_bound": tgt.clock_mhz * 1e6 / figures["crossbar_bound_cycles"]  # type: ignore[attr-defined]
        if figures["crossbar_bound_cycles"] else 0.0,
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def main() -> None:
    from cimc.diagnostics import CimcError

    print("  ".join(f"{c:>12}" for c in COLUMNS))
    with tempfile.TemporaryDirectory(prefix="cimc-bench-") as tmp:
        for name, model in _models():
            for target in TARGETS:
                for budget in (0.0, 0.9):
                    row: dict[str, object] = {"model": name, "target": target,
                                              "repl": "on" if budget else "off"}
                    try:
                        row.update(measure(model, target, budget, Path(tmp)))
                    except CimcError as exc:
                        print(f"{name:>12}  {target:>12}  {row['repl']:>12}  error: {exc}")
                        continue
                    print("  ".join(f"{_cell(row.get(c, '')):>12}" for c in COLUMNS),
                          flush=True)


if __name__ == "__main__":
    main()
