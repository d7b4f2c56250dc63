"""Import + canonicalize time of the ONNX model-zoo graphs that onnx ships.

Prints, per model, the median over a few runs of import-onnx and of
canonicalize, and the op count after canonicalize. ResNet-50 is the figure
to watch: its import + canonicalize should stay under 5 s.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

RUNS = 3
RESNET50_BUDGET_S = 5.0
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


if __name__ == "__main__":
    main()
