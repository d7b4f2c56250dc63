"""Activations through the vector unit's lookup table (issue 13; onnx's node test cases
of them: tests/test_node_cases.py): every quantized activation as a QDQ
model against the exact oracle and compiled; torch exports (Conv -> LeakyReLU, Conv ->
Hardswish, Linear -> Sigmoid/Tanh/GELU, SiLU) quantized by quantize_static, simulated
bit for bit equal to the reference on `isaac` and `edge`, the reference within one
quantum of the exact oracle; and the messages for what is refused."""

from __future__ import annotations

from pathlib import Path

import activation_models
import numpy as np
import onnx
import pytest
from checks import assert_simulation_equals_reference, output_scale
from models import qdq_around
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.diagnostics import CimcError
from cimc.dialect.chip import lut_table
from cimc.ir.module import Module, TensorType
from cimc.reference import run_module
from cimc.reference.oracle import ExactOracle

# ONNX op -> (opset, attributes) of the quantized cases.
ACTIVATIONS = {
    "Sigmoid": (13, {}),
    "Tanh": (13, {}),
    "HardSigmoid": (13, {"alpha": 0.3, "beta": 0.4}),
    "HardSwish": (14, {}),
    "LeakyRelu": (13, {"alpha": 0.07}),
    "Elu": (13, {"alpha": 0.8}),
    "Selu": (13, {}),
    "Softplus": (13, {}),
    "Gelu": (20, {}),
    "Gelu_tanh": (20, {"approximate": "tanh"}),
    "Erf": (13, {}),
}


def _qdq_activation(op: str, dtype: int, in_scale: float, in_zp: int, out_scale: float,
                    out_zp: int):  # -> onnx.ModelProto
    """input -> Q -> DQ -> op -> Q -> DQ -> output, as quantize_static writes a lone
    activation."""
    opset, attrs = ACTIVATIONS[op]
    shape = [1, 4, 8, 8]
    node = helper.make_node(op.split("_")[0], ["xd"], ["t"], name="act", **attrs)
    return qdq_around([node], shape, shape, [], (dtype, in_scale, in_zp),
                      (dtype, out_scale, out_zp), opset, "act")


@pytest.mark.parametrize("op", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantized_activation_is_one_table_within_a_quantum_of_the_oracle(
        op: str, dtype: str, tmp_path: Path) -> None:
    """Every input code (the input spans the whole int8/uint8 range): the reference's lut
    within one quantum of onnxruntime running the QDQ graph as written, and the program
    (a lookup of its own, the input comes from the host) equal to the reference."""
    onnx_type = TensorProto.INT8 if dtype == "int8" else TensorProto.UINT8
    low = -128 if dtype == "int8" else 0
    out_zp = {"Sigmoid": low, "HardSigmoid": low, "Softplus": low}.get(op, low + 128)
    path = tmp_path / "m.onnx"
    onnx.save(_qdq_activation(op, onnx_type, 0.04, low + 128, 0.02, out_zp), path)
    module = cimc.api.prepare(path)
    assert [o.kind for o in module.ops()] == ["quantize", "lut", "dequantize"]
    codes = np.arange(256).reshape(1, 4, 8, 8)
    x = ((codes - 128) * 0.04).astype(np.float32)  # every code of the input once
    got = cimc.run_reference(module, {"input": x})["output"]
    expected = ExactOracle(path).run({"input": x})[0]
    assert np.abs(got - expected).max() <= 0.02 * 1.0001
    program = cimc.compile(path, "isaac")
    program.save(tmp_path / "p.s")
    assert "vlut" in (tmp_path / "p.s").read_text()
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


@pytest.mark.parametrize(("name", "exporter"), activation_models.CASES)
@pytest.mark.parametrize("activations", ["int8", "uint8"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_torch_models_simulate_bit_exact_within_a_quantum_of_the_oracle(
        name: str, exporter: str, activations: str, target: str, tmp_path: Path) -> None:
    model = activation_models.quantized_model(name, exporter, activations)
    x = activation_models.sample_inputs(name, 4, seed=11)
    program = cimc.compile(model, target)
    prog = tmp_path / "p.s"
    program.save(prog)
    assert_simulation_equals_reference(program, prog, x)
    # The activations are lookups at the end of the layers that feed them.
    scale = {"scale"} if name == "conv_channel_scale" else set()
    assert {op.kind for op in program.module.ops()} == {"quantize", "matvec", "dequantize",
                                                         *scale}
    luts = sum(lut_table(program.module, op) is not None for op in program.module.ops())
    assert luts == 2 and "vlut" in prog.read_text()
    reference = cimc.run_reference(program.integer, {"input": x})["logits"]
    oracle = ExactOracle(model).run_samples(x)
    quantum = output_scale(program.integer)
    assert np.abs(reference - oracle).max() <= quantum * 1.0001
    np.testing.assert_array_equal(reference.argmax(1), oracle.argmax(1))


def test_activation_feeding_two_layers_is_a_lookup_of_its_own(tmp_path: Path) -> None:
    """A conv result read by the sigmoid and by another layer keeps its codes: the lookup
    runs as a rescale of its own (a vector op), still equal to the reference."""
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal((4, c, 3, 3)).astype(np.float32) / 4,
                                 f"w{k}") for k, c in enumerate((3, 4, 4))]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Conv", ["s", "w1"], ["d"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "w2"], ["e"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["d", "e"], ["output"])]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6, 6])], w)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    program = cimc.compile(path, "isaac", calibrate={"input": x})
    kinds = [op.kind for op in program.module.ops()]
    assert "rescale" in kinds
    rescale = next(op for op in program.module.ops() if op.kind == "rescale")
    assert len(rescale.inputs) == 2  # the operand and its table
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


def _one_node(tmp_path: Path, node, in_type: int = TensorProto.FLOAT, opset: int = 20,
              initializers: tuple = ()) -> Path:
    graph = helper.make_graph(
        [node], "bad", [helper.make_tensor_value_info("x", in_type, [1, 4])],
        [helper.make_tensor_value_info("y", in_type, [1, 4])], list(initializers))
    path = tmp_path / "bad.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, path)
    return path


def test_unsupported_gelu_approximation_names_the_node(tmp_path: Path) -> None:
    path = _one_node(tmp_path, helper.make_node("Gelu", ["x"], ["y"], name="g1",
                                                approximate="fast"))
    with pytest.raises(CimcError, match=r"node 'g1' \(Gelu\): approximate='fast' is not one "
                                        r"of none, tanh"):
        cimc.api.import_onnx(path)


def test_prelu_with_a_slope_per_channel_names_the_node(tmp_path: Path) -> None:
    """One slope for all (nn.PReLU()'s default) is a LeakyRelu; trained per-channel
    slopes are not run."""
    slopes = numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32), "a")
    path = _one_node(tmp_path, helper.make_node("PRelu", ["x", "a"], ["y"], name="p1"),
                     initializers=(slopes,))
    with pytest.raises(CimcError, match=r"node 'p1' \(PRelu\): a slope per channel \(4 "
                                        r"values\) is not supported"):
        cimc.api.import_onnx(path)


def test_activation_of_an_integer_tensor_names_the_node(tmp_path: Path) -> None:
    path = _one_node(tmp_path, helper.make_node("Sigmoid", ["x"], ["y"], name="s1"),
                     TensorProto.INT32, opset=13)
    with pytest.raises(CimcError, match=r"node name: s1\): X typestr: T, has unsupported "
                                        r"type: tensor\(int32\)"):
        cimc.api.import_onnx(path)
    # The IR says the same of an activation on integers that is not a `lut`.
    module = Module("m")
    module.add_input("x", TensorType((1, 4), "i32"))
    module.add_op("tanh", ["x"], [TensorType((1, 4), "f32")], name="t1")
    module.outputs.append(next(iter(module.ops())).outputs[0])
    with pytest.raises(CimcError, match=r"op 't1' \(tanh\): tanh computes on f32 tensors, "
                                        r"not i32"):
        run_module(module, {"x": np.zeros((1, 4), np.int32)})


def test_product_of_two_tensors_is_not_a_table(tmp_path: Path) -> None:
    """Squeeze-excitation's x * sigmoid(y): two runtime tensors, no table of one: the
    chip's `product` (tests/test_products.py), equal to the reference."""
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal((4, c, 1, 1)).astype(np.float32),
                                 f"w{k}") for k, c in enumerate((3, 4))]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c"]),
             helper.make_node("Conv", ["c", "w1"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["m"], name="excite"),
             helper.make_node("Conv", ["m", "w1"], ["output"])]
    graph = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 4, 4])], w)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    program = cimc.compile(path, "isaac", calibrate={"input": x})
    assert program.module.op("excite").kind == "product"
    program.save(tmp_path / "p.s")
    assert_simulation_equals_reference(program, tmp_path / "p.s", x)


def test_gelu_the_quantizer_leaves_float_at_the_end_runs_on_the_host(tmp_path: Path) -> None:
    """cimc's own quantization (onnxruntime's quantize_static) of a float model: the
    LeakyRelu between the gemms gets QDQ and becomes a lookup on the chip; the Gelu
    ending the model is left float and runs on the host after the last dequantize."""
    from cimc.emit.report import host_work

    rng = np.random.default_rng(1)
    w = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) / 4, f"w{k}")
         for k, shape in enumerate(((8, 16), (4, 8)))]
    nodes = [helper.make_node("Gemm", ["input", "w0"], ["a"], transB=1),
             helper.make_node("LeakyRelu", ["a"], ["b"], alpha=0.2),
             helper.make_node("Gemm", ["b", "w1"], ["c"], transB=1),
             helper.make_node("Gelu", ["c"], ["output"], name="tail_gelu")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])], w)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    program = cimc.compile(path, "isaac", calibrate={"input": x})
    assert sum(len(op.inputs) == 5 for op in program.module.ops() if op.kind == "matvec") == 1
    assert [work.rsplit(" ", 1)[1] for work in host_work(program.module)] == [
        "(quantize)", "(dequantize)", "(gelu)"]
    sim = program.simulate({"input": x[:3]}).outputs["output"]
    np.testing.assert_array_equal(sim, cimc.run_reference(program.integer,
                                                          {"input": x[:3]})["output"])


@pytest.mark.parametrize("dtype", ["i8", "u8"])
@pytest.mark.parametrize("target", ["tiny", "edge"])
def test_lookups_after_every_producer_kind_equal_the_reference(dtype: str, target: str,
                                                                tmp_path: Path) -> None:
    """A lut after a max pool, an average pool and an add (applied by the op computing
    its operand), after a concat (a lookup of its own), and a lut of a lut (composed into
    one table)."""
    from test_lower import Builder, check

    from cimc.reference.activation import table

    b = Builder((1, 3, 6, 6), dtype)
    z = b.zero

    def lut(x: str, kind: str, scale: float, zp: int, **attrs: object) -> str:
        ty = b.m.values[x]
        codes = table(kind, attrs, ty.numpy_dtype, ty.quant.scale[0], ty.quant.zero_point[0],
                      ty.numpy_dtype, scale, zp)
        t = b.m.add_constant(b.m.fresh_name("table"), codes)
        return b.op("lut", [x, t], ty.shape, scale, zp)

    c = b.conv(b.x, 4, 3, (1, 4, 6, 6), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1])
    m = b.op("max_pool", [c], (1, 4, 3, 3), 0.08, z, kernel=[2, 2], strides=[2, 2],
             pads=[0, 0, 0, 0], dilations=[1, 1], ceil_mode=0)
    ms = lut(m, "sigmoid", 1 / 256, z - 128 if dtype == "u8" else -128)
    a = b.op("avg_pool", [c], (1, 4, 3, 3), 0.05, z, kernel=[2, 2], strides=[2, 2],
             pads=[0, 0, 0, 0], ceil_mode=0, count_include_pad=1)
    at = lut(a, "tanh", 1 / 128, z)
    s = b.op("add", [ms, at], (1, 4, 3, 3), 0.02, z)
    se = lut(s, "elu", 0.02, z, alpha=0.5)
    k = b.op("concat", [se, at], (1, 8, 3, 3), 0.02, z, axis=1)
    kg = lut(k, "gelu", 0.015, z)
    kk = lut(kg, "leaky_relu", 0.015, z, alpha=0.1)
    module = check(b.finish(kk), target, tmp_path)
    kinds = [op.kind for op in module.ops()]
    assert kinds.count("pool") == 2 and "lut" not in kinds
    pools = [op for op in module.ops() if op.kind == "pool"]
    assert all(len(op.inputs) == 2 for op in pools)  # each ends with its table
    # A lookup of its own after the concat; the lut of a lut is one table.
    assert sum(op.kind == "rescale" and len(op.inputs) == 2 for op in module.ops()) == 1
    assert [len(op.inputs) for op in module.ops() if op.kind == "eltwise"] == [3]
    # (the join rescales the tanh's codes, quantized unlike its result, as the reference)
    assert kinds == ["quantize", "matvec", "pool", "pool", "eltwise", "rescale", "join",
                     "rescale", "dequantize"]
