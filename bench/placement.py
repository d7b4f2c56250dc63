"""Placement benchmark: model x target x placer -> the placer's time, hop_bytes and its
ratio to sequential's, the most loaded link, the lower bound and the gap.

    python -m bench placement    (CIMC_PLACE_EFFORT=E sets the placers' effort,
                                  CIMC_PLACE_MODELS=a,b picks models)

Models: ResNet-18 (224x224, tests/models.py), MobileNetV2 (32x32 and 224x224,
tests/backend_models.py), and ResNet-50, VGG-19 and DenseNet-121 from the
structure-only graphs onnx ships (onnx/backend/test/data/light): their
weights are ConstantOfShape fills, replaced here by seeded random weights,
then the float model is quantized by cimc.frontend.quantize on seeded random inputs.
DenseNet-121's pre-activation batch norms (BatchNormalization, Mul, Add on
the concatenated features before each ReLU) are dropped: the backend has no
per-channel affine op, and they do not change which bytes move where.
Every placer runs on the same tiled, replicated module and the same problem.
`place_s` is the placer's own time (the report's `place_seconds`: the search,
not building the problem or the bound). After each model and target a line
says whether the criterion holds, `cpsat` <= 0.5x `sequential`, whether
`cpsat` is also below `snake` and `anneal` at the same effort (not a goal: its
repair trades hop_bytes for latency, which `bench compile224` measures), and
how long `cpsat` took (the goal:
about a second for a 224x224 network; printed, never asserted). The last lines time the whole
compile of ResNet-50 on pimcomp (`cimc resnet50.onnx -o r50.s --target
pimcomp` in a child process: wall time and peak resident memory).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = ("pimcomp", "isaac")
PLACERS = ("sequential", "snake", "anneal", "cpsat")
ALL_MODELS = "resnet18,resnet50,vgg19,densenet121,mobilenetv2,mobilenetv2_224"
# The criterion on hop_bytes: at most this fraction of sequential's.
RATIO_GOAL = 0.5
MODELS = tuple(os.environ.get("CIMC_PLACE_MODELS", ALL_MODELS).split(","))


def materialize(source: Path, output: Path, drop_affine: bool) -> None:
    """The structure-only graph with seeded random weights, opset 13."""
    import numpy as np
    import onnx
    from onnx import numpy_helper, version_converter

    model = onnx.load(str(source))
    shapes = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(v) for v in shapes[node.input[0]])
            if len(shape) >= 2:  # conv / gemm weights: He-scaled normal
                fan_in = int(np.prod(shape[1:]))
                data = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:  # biases, batch-norm parameters: the graph's fill value (never 0 variance)
                fill = float(numpy_helper.to_array(node.attribute[0].t).reshape(-1)[0])
                data = np.full(shape, fill or 1.0)
            weights.append(numpy_helper.from_array(data.astype(np.float32), node.output[0]))
        else:
            nodes.append(node)
    if drop_affine:
        nodes = _drop_affine(nodes, {w.name for w in weights})
    used = {name for node in nodes for name in node.input}
    kept = [w for w in [*model.graph.initializer, *weights] if w.name in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    names = {w.name for w in kept}
    inputs = [i for i in model.graph.input if i.name not in names and i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 7
    onnx.save(version_converter.convert_version(model, 13), str(output))


def _drop_affine(nodes: list, params: set[str]) -> list:
    """Nodes without per-channel affine ops (BatchNormalization, Mul, Add by constants)."""
    rename: dict[str, str] = {}
    kept = []
    for node in nodes:
        inputs = [rename.get(i, i) for i in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if node.op_type == "Constant" or (node.op_type == "Unsqueeze"
                                          and all(i in params for i in inputs)):
            params.update(node.output)
        if (node.op_type in ("BatchNormalization", "Mul", "Add")
                and all(i in params for i in inputs[1:])):
            rename[node.output[0]] = inputs[0]
        else:
            kept.append(node)
    return kept


def model_path(name: str, workdir: Path) -> Path:
    """A QDQ model of `name` (built once per workdir)."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    if name == "resnet18":
        import models

        return models.quantized_model("resnet18")
    if name in ("mobilenetv2", "mobilenetv2_224"):
        import backend_models

        return backend_models.quantized_model(name)
    import onnx

    from cimc.frontend.quantize import quantize_onnx
    from cimc.ir.module import TensorType

    output = workdir / f"{name}-int8.onnx"
    if not output.exists():
        float_path = workdir / f"{name}-float.onnx"
        zoo = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
        materialize(zoo / f"light_{name}.onnx", float_path, name == "densenet121")
        graph = onnx.load(str(float_path)).graph
        inputs = {i.name: TensorType(tuple(d.dim_value for d in i.type.tensor_type.shape.dim),
                                     "f32") for i in graph.input}
        quantize_onnx(str(float_path), output, inputs, None)
    return output


def tiled(path: Path, target: str):  # -> Module
    from cimc.frontend.importer import import_onnx
    from cimc.pass_manager import parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND
    from cimc.targets import load_target

    module = import_onnx(str(path))
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    run_pipeline(module, parse_pipeline("lower,tile,replicate", load_target(target)))
    return module


def main() -> None:
    import copy
    import logging
    import warnings

    from cimc.diagnostics import CimcError
    from cimc.passes.place import DEFAULT_EFFORT, Place
    from cimc.targets import load_target

    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    effort = float(os.environ.get("CIMC_PLACE_EFFORT", DEFAULT_EFFORT))
    print(f"   effort {effort:g}; gap = 1 - bound / hop_bytes; ratio = hop_bytes / "
          "sequential's")
    header = ("model", "target", "placer", "place_s", "hop_bytes", "ratio", "max_link_B",
              "bound", "gap")
    print("   " + " ".join(f"{h:>12}" for h in header))
    with tempfile.TemporaryDirectory(prefix="cimc-bench-place-") as tmp:
        for name in MODELS:
            path = model_path(name, Path(tmp))
            for target in TARGETS:
                try:  # replicate rejects a model too big for the target
                    module = tiled(path, target)
                except CimcError as exc:
                    print(f"   {name:>12} {target:>12}  does not fit: {exc.message}")
                    continue
                sequential = None
                costs: dict[str, int] = {}
                seconds: dict[str, float] = {}
                for placer in PLACERS:
                    run = Place(placer=placer, effort=effort)
                    run.target = load_target(target)
                    try:
                        run.apply(copy.deepcopy(module))
                    except CimcError as exc:
                        print(f"   {name:>12} {target:>12}  does not fit: {exc.message}")
                        break
                    s = run.summary
                    assert s is not None
                    sequential = sequential or s.hop_bytes
                    costs[placer], seconds[placer] = s.hop_bytes, s.seconds
                    ratio = s.hop_bytes / sequential if sequential else 1.0
                    row = (name, target, placer, f"{s.seconds:.2f}", s.hop_bytes, f"{ratio:.3f}",
                           s.max_link_bytes, s.hop_bytes_bound, f"{s.gap:.3f}")
                    print("   " + " ".join(f"{v!s:>12}" for v in row), flush=True)
                if len(costs) == len(PLACERS):
                    ok = costs["cpsat"] <= RATIO_GOAL * costs["sequential"]
                    below = costs["cpsat"] < min(costs["snake"], costs["anneal"])
                    print(f"   {name:>12} {target:>12}  cpsat <= {RATIO_GOAL}x sequential: "
                          f"{'yes' if ok else 'NO'}; below snake and anneal: "
                          f"{'yes' if below else 'no'}; cpsat placed in "
                          f"{seconds['cpsat']:.2f} s", flush=True)
            if name == "resnet50":
                whole_compile(path, Path(tmp))


def whole_compile(model: Path, workdir: Path) -> None:
    """Wall time and peak memory of the whole compile of `model` on pimcomp."""
    command = [sys.executable, "-m", "cimc", str(model), "-o", str(workdir / "r50.s"),
               "--target", "pimcomp"]
    log = workdir / "r50.log"
    start = time.perf_counter()
    with open(log, "w") as out:  # wait4: this child's own peak, not all children's
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        code = child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    peak = usage.ru_maxrss / 2**20  # KiB -> GiB
    outcome = "ok" if code == 0 else f"failed: {log.read_text().strip()[-200:]}"
    print(f"   whole compile of ResNet-50 on pimcomp (default placer and limit): "
          f"{seconds:.1f} s, peak memory {peak:.2f} GiB, {outcome} "
          f"(criteria: 30 s, 3 GiB)", flush=True)


if __name__ == "__main__":
    main()
