"""Import + canonicalize time of the ONNX model-zoo graphs that onnx ships, and what the
frontend and the crossbar image cost on the int8 QDQ 224x224 CNNs.

Prints, per zoo model, the median over a few runs of import-onnx and of
canonicalize, and the op count after canonicalize. ResNet-50 is the figure
to watch: its import + canonicalize should stay under 5 s.

Then, per QDQ model of tests/backend_models.py (ResNet-18, ResNet-50,
MobileNetV2 at 224x224; CIMC_BENCH_MODEL_DIR=DIR takes DIR/NAME.onnx instead
of exporting and quantizing them), each figure from a fresh process:
`prepare_s` (import + frontend passes, `cimc.prepare`, with the libraries it
imports on first use; median of RUNS),
`prepare_rss_mb` (the process's peak RSS, libraries included), `traced_mb`
(the peak of Python and numpy allocations during `prepare`, tracemalloc),
and of a whole `cimc.compile` for pimcomp: `compile_s`, `compile_rss_mb` and
`image_bytes`, the size of its crossbar image file.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 3
RESNET50_BUDGET_S = 5.0
QDQ_MODELS = ["resnet18_224", "resnet50_224", "mobilenetv2_224"]
MODELS = ["resnet50", "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2",
          "shufflenet", "squeezenet", "vgg19", "zfnet512"]


def zoo_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def time_model(path: Path, runs: int = RUNS) -> tuple[float, float, int]:
    """Median seconds of import and of canonicalize, and the final op count."""
    from cimc.frontend.importer import import_onnx
    from cimc.passes.canonicalize import Canonicalize

    imports, canons, ops = [], [], 0
    for _ in range(runs):
        start = time.perf_counter()
        module = import_onnx(str(path))
        middle = time.perf_counter()
        Canonicalize().apply(module)
        end = time.perf_counter()
        imports.append(middle - start)
        canons.append(end - middle)
        ops = module.graph.number_of_nodes()
    return statistics.median(imports), statistics.median(canons), ops


def main() -> None:
    print(f"   {'model':<14} {'import s':>9} {'canon. s':>9} {'total s':>8} {'ops':>5}"
          f"   (median of {RUNS})")
    for name in MODELS:
        path = zoo_dir() / f"light_{name}.onnx"
        imported, canonical, ops = time_model(path)
        total = imported + canonical
        note = ""
        if name == "resnet50":
            note = "  ok (< 5 s)" if total < RESNET50_BUDGET_S else "  OVER the 5 s budget"
        print(f"   {name:<14} {imported:9.3f} {canonical:9.3f} {total:8.3f} {ops:5d}{note}",
              flush=True)

    print_parse_figures()
    print_qdq_figures()


def print_parse_figures() -> None:
    """Printing and parsing the .cir text of a ResNet-50-sized module (tests/test_ir_text.py's
    `big_module`: 25 M weights, about 100 MB of text)."""
    import sys

    from cimc.ir.text import parse_module, print_module

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_ir_text import big_module

    module = big_module()
    start = time.perf_counter()
    text = print_module(module)
    printed = time.perf_counter() - start
    start = time.perf_counter()
    parse_module(text)
    parsed = time.perf_counter() - start
    print(f"   .cir of a ResNet-50-sized module ({len(text) / 1e6:.0f} MB): print {printed:.2f} s, "
          f"parse {parsed:.2f} s", flush=True)


def qdq_model(name: str) -> Path:
    """The QDQ model `name`: from CIMC_BENCH_MODEL_DIR when it holds it, else exported
    and quantized by tests/backend_models.py."""
    given = Path(os.environ.get("CIMC_BENCH_MODEL_DIR", "/nonexistent")) / f"{name}.onnx"
    if given.is_file():
        return given
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import backend_models

    return backend_models.quantized_model(name)


def print_qdq_figures() -> None:
    columns = ("model", "prepare_s", "prepare_rss_mb", "traced_mb", "compile_s",
               "compile_rss_mb", "image_bytes")
    print(f"   {'':<16}(prepare: median of {RUNS} fresh processes; compile for pimcomp)")
    print("   " + " ".join(f"{c:>15}" for c in columns), flush=True)
    for name in QDQ_MODELS:
        path = str(qdq_model(name))
        runs = [measure(path, "prepare") for _ in range(RUNS)]
        traced = measure(path, "traced")
        whole = measure(path, "compile")
        values = (name, f"{statistics.median(r['seconds'] for r in runs):.2f}",
                  f"{statistics.median(r['rss_mb'] for r in runs):.0f}",
                  f"{traced['traced_mb']:.0f}", f"{whole['seconds']:.2f}",
                  f"{whole['rss_mb']:.0f}", whole["image_bytes"])
        print("   " + " ".join(f"{v!s:>15}" for v in values), flush=True)


def measure(path: str, mode: str) -> dict[str, float]:
    """The figures of one `mode` run (see `child`) on the model at `path`, in a fresh
    process: peak RSS is per process."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bench.frontend", mode, path], cwd=root,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(mode: str, path: str) -> None:
    """One measured run, printed as JSON: `prepare`, `traced` (under tracemalloc) or
    `compile` (for pimcomp, with the image's size)."""
    import resource
    import tracemalloc

    import cimc

    figures: dict[str, float] = {}
    if mode == "traced":
        tracemalloc.start()
    start = time.perf_counter()
    if mode == "compile":
        program = cimc.compile(path, target="pimcomp")
        figures["image_bytes"] = len(program.image.to_bytes())
    else:
        cimc.prepare(path)
    figures["seconds"] = time.perf_counter() - start
    if mode == "traced":
        figures["traced_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) == 3:
        child(sys.argv[1], sys.argv[2])
    else:
        main()
