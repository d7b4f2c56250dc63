"""Refusal benchmark: how fast a model too big for the target is refused.

    python -m bench capacity

Builds float models with onnx.helper and seeded random weights (no torch; they
live in a temporary directory, never in git): VGG-16 at 224x224 (138 M
weights, 553 MB) and one 16384 x 16384 MatMul (1 GiB), and compiles each for
`pimcomp` in a child process. Both must be refused (the crossbar count comes
from the weights' shapes right after import, before quantization) within
10 s; the bench prints the wall time, the child's peak memory and the error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M")
LIMIT_SECONDS = 10.0


def vgg16(path: Path) -> None:
    """Float VGG-16 for 1x3x224x224 inputs: 13 convs, 5 max pools, 3 fully connected."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights = [], []
    x, channels = "input", 3
    for k, layer in enumerate(VGG16):
        if layer == "M":
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{k}"], kernel_shape=[2, 2],
                                          strides=[2, 2]))
            x = f"pool{k}"
            continue
        assert isinstance(layer, int)
        w = (rng.standard_normal((layer, channels, 3, 3)) * 0.05).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"conv{k}.w"),
                    numpy_helper.from_array(np.zeros(layer, np.float32), f"conv{k}.b")]
        nodes += [helper.make_node("Conv", [x, f"conv{k}.w", f"conv{k}.b"], [f"conv{k}"],
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{k}"], [f"relu{k}"])]
        x, channels = f"relu{k}", layer
    nodes.append(helper.make_node("Flatten", [x], ["flat"]))
    x, width = "flat", channels * 7 * 7
    for k, out in enumerate((4096, 4096, 1000)):
        w = (rng.standard_normal((out, width)) * 0.01).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"fc{k}.w"),
                    numpy_helper.from_array(np.zeros(out, np.float32), f"fc{k}.b")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{k}.w", f"fc{k}.b"], [f"fc{k}"],
                                      transB=1))
        x, width = f"fc{k}", out
    graph = helper.make_graph(
        nodes, "vgg16", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                       (1, 3, 224, 224))],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, (1, 1000))], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def big_matmul(path: Path, size: int = 16384) -> None:
    """One float MatMul with a size x size weight matrix (1 GiB at 16384)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, size))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, size))],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def refuse(model: Path, target: str) -> tuple[float, float, int, str]:
    """Compile `model` in a child: (wall seconds, peak GiB, exit status, last stderr line)."""
    command = [sys.executable, "-m", "cimc", str(model), "-o", str(model.with_suffix(".s")),
               "--target", target]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
    seconds = time.perf_counter() - start
    assert child.stderr is not None
    lines = child.stderr.read().strip().splitlines()
    child.stderr.close()
    return seconds, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status), \
        lines[-1] if lines else ""


BUILDERS = {"vgg16_224": vgg16, "matmul_1GiB": big_matmul}


def main() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory(prefix="cimc-bench-capacity-") as tmp:
        for name in BUILDERS:
            path = Path(tmp) / f"{name}.onnx"
            # Built in a child: a child's peak memory counts its parent's at the fork.
            subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from bench.capacity import BUILDERS; "
                            "BUILDERS[sys.argv[1]](Path(sys.argv[2]))", name, str(path)],
                           cwd=root, check=True)
            seconds, peak, status, message = refuse(path, "pimcomp")
            ok = status == 1 and "crossbars" in message and seconds <= LIMIT_SECONDS
            print(f"   {name:>12} on pimcomp: refused in {seconds:.1f} s, peak {peak:.2f} GiB "
                  f"(within {LIMIT_SECONDS:g} s: {'yes' if ok else 'NO'})")
            print(f"   {'':>12}   {message.replace(tmp + '/', '')}", flush=True)
            path.unlink()
