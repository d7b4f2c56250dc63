"""The product of two activations on the chip (issue 13): a quantized Mul of two runtime
tensors becomes the vector unit's `product`, `(a - za) * (b - zb)` requantized with
`m = sa * sb / sy`, an operand broadcast along rows and columns. Torch exports
(squeeze-excitation with a [1,C,1,1] gate, a gated product of two branches, a
MobileNetV3 block with HardSwish, SiLU and a HardSigmoid squeeze-excitation) quantized by
quantize_static simulate bit for bit equal to the reference on `isaac` and `edge`, the
reference within one quantum of the exact oracle; broadcasts along rows, columns and
channels (a spatial gate); the timing model follows the simulator; operands of
different ranks are refused naming the op."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import product_models
import pytest
from checks import assert_simulation_equals_reference, output_scale
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.diagnostics import CimcError
from cimc.reference.oracle import ExactOracle


@pytest.mark.parametrize(("name", "exporter"), product_models.CASES)
@pytest.mark.parametrize("activations", ["int8", "uint8"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_torch_models_simulate_bit_exact_within_a_quantum_of_the_oracle(
        name: str, exporter: str, activations: str, target: str, tmp_path: Path) -> None:
    model = product_models.quantized_model(name, exporter, activations)
    x = product_models.sample_inputs(name, 4, seed=11)
    program = cimc.compile(model, target)
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    products = [op for op in program.module.ops() if op.kind == "product"]
    assert len(products) == 1 and "vmul.i32" in prog.read_text()
    gate = [program.module.values[v].shape for v in products[0].inputs[:2]]
    if name == "gated":
        assert gate[0] == gate[1]
    else:  # the squeeze-excitation gate: one pixel of every channel
        assert sorted(s[2] * s[3] for s in gate)[0] == 1
    reference = cimc.run_reference(program.integer, {"input": x})["logits"]
    oracle = ExactOracle(model).run_samples(x)
    quantum = output_scale(program.integer)
    assert np.abs(reference - oracle).max() <= quantum * 1.0001
    np.testing.assert_array_equal(reference.argmax(1), oracle.argmax(1))


@pytest.mark.parametrize("name", ["squeeze_excite", "gated"])
@pytest.mark.parametrize("pipeline", ["latency", "throughput"])
def test_timing_model_within_five_percent_of_the_simulator(name: str, pipeline: str) -> None:
    program = cimc.compile(product_models.quantized_model(name, "legacy"), "isaac",
                           pipeline=pipeline)
    modelled, simulated = program.report, program.simulated_report
    for key in ("cycles", "throughput", "energy_nj"):
        assert abs(modelled[key] / simulated[key] - 1) < 0.05, (key, modelled[key],
                                                                 simulated[key])


def _pooled_product(tmp_path: Path, kernel: list[int], channels: int = 4,
                    flat: bool = False) -> Path:
    """conv(x) * avg_pool(conv(x)) with the pool's `kernel` over a 6x6 image: an operand of
    one row ([1,C,1,6]), one column ([1,C,6,1]) or one pixel, broadcast; a conv of
    `channels` outputs makes the second operand (one: a spatial gate); `flat` reshapes it
    to rank 3."""
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32) / 4,
                                 f"w{k}") for k, c in enumerate((4, channels))]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["input", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["b"], kernel_shape=kernel,
                              strides=kernel),
             *([helper.make_node("Reshape", ["b", "shape"], ["f"])] if flat else []),
             helper.make_node("Mul", ["a", "f" if flat else "b"], ["p"], name="product"),
             helper.make_node("Relu", ["p"], ["output"])]
    graph = helper.make_graph(
        nodes, "pooled", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                        [1, 3, 6, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6, 6])],
        [*w, numpy_helper.from_array(np.array([channels, 1, 1], np.int64), "shape")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize(("kernel", "channels"), [
    ([6, 1], 4), ([1, 6], 4), ([6, 6], 4), ([1, 1], 4), ([1, 1], 1), ([6, 6], 1), ([1, 6], 1)],
    ids=["row", "column", "pixel", "same", "channel", "scalar", "channel-row"])
def test_operand_broadcast_along_channels_rows_and_columns(kernel: list[int], channels: int,
                                                           tmp_path: Path) -> None:
    """The product is the model's output (stored by the chip); every broadcast the chip
    takes, equal to the reference bit for bit (one channel: a spatial gate, spread)."""
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    program = cimc.compile(_pooled_product(tmp_path, kernel, channels), "isaac",
                           calibrate={"input": x})
    assert "product" in [op.kind for op in program.module.ops()]
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


def test_operands_of_different_ranks_are_refused_naming_the_op(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    # the [4,1,1] operand is stored (as 4 tokens of one channel) but broadcasts to the
    # image other than as a gate: lower names the product
    with pytest.raises(CimcError, match=r"op 'product' \(mul\): the second operand "
                                        r"\[4, 1, 1\] broadcasts to \[1, 4, 6, 6\] other than"):
        cimc.compile(_pooled_product(tmp_path, [6, 6], flat=True), "isaac",
                     calibrate={"input": x})


