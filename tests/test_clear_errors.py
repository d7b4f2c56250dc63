"""Inputs that used to end in a traceback or a misleading message now get one
clear message naming the file, node or line and saying what to do.

Each case builds a small ONNX model (or input file) inline, runs `cimc ...`
in-process and checks what the user sees on stderr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.cli import main
from cimc.reference.oracle import exact_outputs


def _save(path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto] = ()
          ) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def _value(name: str, shape: list[int] | None, dtype: int = TensorProto.FLOAT
           ) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], *says: str) -> str:
    """Run `cimc ARGS`; it fails with one error message holding every text of `says`."""
    status = main(args)
    err = capsys.readouterr().err
    assert status == 1, err
    assert "Traceback" not in err
    assert err.startswith("cimc: "), err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    for text in says:
        assert text in err, f"{text!r} not in {err!r}"
    return err


def _check_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], run_model: str,
               quantized: str, x: np.ndarray, *extra: str) -> None:
    """`cimc run RUN_MODEL` on `x` (tiny): the simulator equals the reference bit for bit,
    and the reference is within one quantum of the exact oracle on the QUANTIZED model."""
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for engine in ("reference", "sim"):
        out = tmp_path / f"{engine}.npy"
        status = main(["run", run_model, "--engine", engine, "--target", "tiny", *extra,
                       "--inputs", str(tmp_path / "x.npy"), "--outputs", str(out)])
        assert status == 0, capsys.readouterr().err
        outputs[engine] = np.load(out)
    np.testing.assert_array_equal(outputs["sim"], outputs["reference"])
    expected = np.concatenate([exact_outputs(quantized, {"x": x[i:i + 1]})[0]
                               for i in range(len(x))])
    quantum = float(numpy_helper.to_array(next(
        i for i in onnx.load(quantized).graph.initializer if i.name == "y_scale")))
    assert np.abs(outputs["reference"] - expected).max() <= quantum * (1 + 1e-3)


def _qdq_conv(path: Path, x_scale: float = 0.05, y_scale: float = 0.1) -> str:
    """x -> Q/DQ -> Conv (per-channel int8 weights) -> Q/DQ -> y, node names as given."""
    inits = [_const("xs", np.array(x_scale, np.float32)), _const("xz", np.array(0, np.int8)),
             _const("w", np.ones((2, 1, 3, 3), np.int8)),
             _const("ws", np.array([0.01, 0.02], np.float32)), _const("wz", np.zeros(2, np.int8)),
             _const("ys", np.array(y_scale, np.float32)), _const("yz", np.array(0, np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="w_dq", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"], name="c_q"),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"], name="c_dq")]
    return _save(path, nodes, [_value("x", [1, 1, 4, 4])], [_value("y", [1, 2, 4, 4])], inits)


# ---- requantization multipliers out of range -----------------------------------------

@pytest.mark.parametrize("scales", [{"y_scale": 1e-30}, {"x_scale": 1e30}])
def test_a_scale_of_1e30_or_1e_minus_30_is_refused_naming_the_node(
        scales: dict[str, float], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _qdq_conv(tmp_path / "m.onnx", **scales)
    _fails([model, "-o", str(tmp_path / "out.s"), "--target", "tiny"], capsys,
           "'conv1'", "multiplier", "re-quantize the model")
    assert not (tmp_path / "out.s").exists()
    np.save(tmp_path / "x.npy", np.ones((1, 1, 4, 4), np.float32))
    _fails(["run", model, "--engine", "reference", "--inputs", str(tmp_path / "x.npy"),
            "--outputs", str(tmp_path / "y.npy")], capsys,
           "'conv1'", "multiplier", "re-quantize the model")


# ---- input files numpy cannot read -----------------------------------------------------

def _bad_input_files(d: Path) -> None:
    """A malformed .npy header, an .npy file named .npz, and an .npz of object arrays."""
    good = d / "good.npy"
    np.save(good, np.zeros((1, 1, 4, 4), np.float32))
    data = good.read_bytes()
    (d / "header.npy").write_bytes(data.replace(b"), }", b"  }", 1))  # unclosed "("
    (d / "npy.npz").write_bytes(data)
    np.savez(d / "objects.npz", x=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize(("name", "says"), [
    ("header.npy", ["not a readable numpy .npy file", "numpy.save"]),
    ("npy.npz", ["an .npy file", "rename it to .npy"]),
    ("objects.npz", ["not a readable numpy .npz file", "numpy.savez"]),
])
def test_unreadable_input_files_are_named_by_run_and_sim(
        name: str, says: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bad_input_files(tmp_path)
    model = _qdq_conv(tmp_path / "m.onnx")
    inputs = str(tmp_path / name)
    _fails(["run", model, "--engine", "reference", "--inputs", inputs, "--outputs",
            str(tmp_path / "y.npy")], capsys, inputs, *says)
    program = str(tmp_path / "prog.s")
    assert main([model, "-o", program, "--target", "tiny"]) == 0
    _fails(["sim", program, "--inputs", inputs, "--outputs", str(tmp_path / "y.npy")], capsys,
           inputs, *says)
    assert not (tmp_path / "y.npy").exists()


# ---- the reference engine computes what the exact oracle computes ----------------------

def _reference_run(model: str, inputs: dict[str, np.ndarray], tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> np.ndarray:
    """`cimc run MODEL --engine reference` on `inputs`: its one output, no traceback."""
    feeds = tmp_path / "inputs.npz"
    np.savez(feeds, **inputs)
    out = tmp_path / "y.npy"
    status = main(["run", model, "--engine", "reference", "--inputs", str(feeds),
                   "--outputs", str(out)])
    err = capsys.readouterr().err
    assert status == 0 and "Traceback" not in err, err
    return np.load(out)


def test_reference_gemm_with_a_runtime_scalar_bias_equals_the_oracle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _const("w", np.arange(12, dtype=np.float32).reshape(4, 3) / 8)
    model = _save(tmp_path / "m.onnx", [helper.make_node("Gemm", ["x", "w", "b"], ["y"],
                                                         name="gemm")],
                  [_value("x", [1, 4]), _value("b", [])], [_value("y", [1, 3])], [weights])
    feeds = {"x": np.array([[1.0, -2.0, 0.5, 4.0]], np.float32), "b": np.array(0.25, np.float32)}
    got = _reference_run(model, feeds, tmp_path, capsys)
    np.testing.assert_allclose(got, exact_outputs(model, feeds)[0], rtol=1e-6)
    # Stacked batches of x beside a 0-d input that cannot be stacked: a clear error.
    np.savez(tmp_path / "two.npz", x=np.ones((2, 4), np.float32), b=feeds["b"])
    _fails(["run", model, "--engine", "reference", "--inputs", str(tmp_path / "two.npz"),
            "--outputs", str(tmp_path / "y2.npy")], capsys, "two.npz", "'x' 2, 'b' 1",
           "give every input the same number")
    # The sim engine quantizes it first (random calibration of a 0-d input included); the
    # chip cannot add a runtime bias, which is said, not a traceback.
    _fails(["run", model, "--target", "tiny", "--inputs", str(tmp_path / "inputs.npz"),
            "--outputs", str(tmp_path / "y3.npy")], capsys, "(gemm) is float",
           "end the model before it")


def test_reference_1d_matmul_equals_the_oracle_for_one_and_several_batches(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _const("w", np.array([0.5, -1.0, 2.0, 0.25], np.float32))
    model = _save(tmp_path / "m.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                  [_value("x", [4])], [_value("y", [])], [weights])
    x = np.arange(8, dtype=np.float32) - 3
    one = _reference_run(model, {"x": x[:4]}, tmp_path, capsys)
    assert one.shape == ()
    np.testing.assert_allclose(one, exact_outputs(model, {"x": x[:4]})[0], rtol=1e-6)
    two = _reference_run(model, {"x": x}, tmp_path, capsys)  # two batches: one scalar each
    expected = [exact_outputs(model, {"x": x[i:i + 4]})[0] for i in (0, 4)]
    np.testing.assert_allclose(two, expected, rtol=1e-6)


def test_reference_uint8_max_pool_equals_the_oracle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[3, 3],
                            strides=[2, 2], pads=[1, 1, 1, 1])
    model = _save(tmp_path / "m.onnx", [node], [_value("x", [1, 2, 5, 5], TensorProto.UINT8)],
                  [_value("y", [1, 2, 3, 3], TensorProto.UINT8)])
    x = np.random.default_rng(0).integers(0, 256, (1, 2, 5, 5)).astype(np.uint8)
    got = _reference_run(model, {"x": x}, tmp_path, capsys)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, exact_outputs(model, {"x": x})[0])


# ---- Gemm alpha and beta ----------------------------------------------------------------

@pytest.mark.parametrize(("alpha", "beta"), [(2.0, 1.0), (1.0, 0.5), (-0.75, 3.0), (1.5, 0.0)])
def test_gemm_alpha_and_beta_fold_into_quantized_weights_and_bias(
        alpha: float, beta: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A QDQ Gemm after a flatten with alpha/beta != 1 compiles (it used to be refused as
    "flattening a [C,H,W] image"), the reference is within one quantum of the exact oracle
    and the simulator equals the reference bit for bit."""
    from cimc.frontend.importer import import_onnx
    from cimc.frontend.quantize import quantize_onnx

    rng = np.random.default_rng(3)
    inits = [_const("cw", rng.standard_normal((4, 2, 3, 3)).astype(np.float32)),
             _const("w", rng.standard_normal((3, 64)).astype(np.float32)),
             _const("b", rng.standard_normal(3).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", alpha=alpha, beta=beta,
                              transB=1)]
    float_model = _save(tmp_path / "float.onnx", nodes, [_value("x", [1, 2, 4, 4])],
                        [_value("y", [1, 3])], inits)
    x = rng.standard_normal((8, 2, 4, 4)).astype(np.float32)
    model = str(tmp_path / "qdq.onnx")
    quantize_onnx(float_model, model, {"x": import_onnx(float_model).values["x"]}, {"x": x})
    _check_run(tmp_path, capsys, model, model, x)


# ---- the host's quantize / dequantize missing at the model's edges ---------------------

def _edge_model(path: Path, quantize_input: bool, dequantize_output: bool) -> str:
    """_qdq_conv without its input QuantizeLinear (an i8 input) or output DequantizeLinear."""
    model = onnx.load(_qdq_conv(path))
    graph = model.graph
    nodes = list(graph.node)
    if not quantize_input:
        nodes = [n for n in nodes if n.name != "x_q"]
        graph.input[0].CopyFrom(_value("xq", [1, 1, 4, 4], TensorProto.INT8))
    if not dequantize_output:
        nodes = [n for n in nodes if n.name != "c_dq"]
        graph.output[0].CopyFrom(_value("cq", [1, 2, 4, 4], TensorProto.INT8))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, path)
    return str(path)


def test_a_result_without_dequantize_linear_is_named_with_what_to_add(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _edge_model(tmp_path / "m.onnx", quantize_input=True, dequantize_output=False)
    says = ["model output 'cq'", "'conv1'", "add a DequantizeLinear"]
    _fails([model, "-o", str(tmp_path / "out.s"), "--target", "tiny"], capsys, *says)
    np.save(tmp_path / "x.npy", np.ones((1, 1, 4, 4), np.float32))
    _fails(["run", model, "--target", "tiny", "--inputs", str(tmp_path / "x.npy"),
            "--outputs", str(tmp_path / "y.npy")], capsys, *says)


def test_an_integer_input_without_quantize_linear_is_named_with_what_to_add(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _edge_model(tmp_path / "m.onnx", quantize_input=False, dequantize_output=True)
    err = _fails([model, "-o", str(tmp_path / "out.s"), "--target", "tiny"], capsys,
                 "model input 'xq'", "'conv1'", "QuantizeLinear")
    assert "schedule" not in err


# ---- models whose initializers are also graph inputs (IR version 3) --------------------

@pytest.mark.parametrize("opset", [13, 9])
def test_a_float_model_listing_its_initializers_as_inputs_is_quantized_and_compiled(
        opset: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Equal initializers (two biases) listed as graph inputs, as IR version 3 does: the
    quantizer used to ask for them in every calibration feed. At opset 9 the quantized
    model's per-channel DequantizeLinear failed the checker ("Unrecognized attribute:
    axis"): the model is converted first, as import-onnx converts it."""
    rng = np.random.default_rng(0)
    inits = [_const("w1", rng.standard_normal((2, 1, 3, 3)).astype(np.float32)),
             _const("w2", rng.standard_normal((2, 2, 3, 3)).astype(np.float32)),
             _const("b1", np.full(2, 0.1, np.float32)), _const("b2", np.full(2, 0.1, np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    inputs = [_value("x", [1, 1, 4, 4])] + [_value(i.name, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "g", inputs, [_value("y", [1, 2, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((4, 1, 4, 4)).astype(np.float32))
    outputs = {}
    for engine in ("reference", "sim"):
        out = tmp_path / f"{engine}.npy"
        status = main(["run", str(tmp_path / "m.onnx"), "--engine", engine, "--target", "tiny",
                       "--calibrate", str(tmp_path / "x.npy"), "--inputs",
                       str(tmp_path / "x.npy"), "--outputs", str(out)])
        assert status == 0, capsys.readouterr().err
        outputs[engine] = np.load(out)
    np.testing.assert_array_equal(outputs["sim"], outputs["reference"])


def test_inception_v1_of_the_onnx_package_at_opset_18_folds_its_lrn(tmp_path: Path) -> None:
    """The zoo's inception_v1 (IR version 3) converted to opset 18: its LRNs, float between
    quantized convolutions, become integer ops (it used to end in KeyError 'addr' in
    codegen, or, with its initializers still graph inputs, in onnxruntime asking for them
    in the feed; then in an error naming the float LRN)."""
    from onnx import version_converter

    zoo = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    model = version_converter.convert_version(onnx.load(zoo / "light_inception_v1.onnx"), 18)
    onnx.save(model, tmp_path / "inception.onnx")
    module = cimc.api.prepare(tmp_path / "inception.onnx")
    kinds = [op.kind for op in module.ops()]
    assert "lrn" not in kinds and {module.op(name).kind for name in ("n3", "n8")} == {"mul"}


# ---- a window larger than the padded input ----------------------------------------------

@pytest.mark.parametrize(("node", "says"), [
    (helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[1000, 1000]),
     ["node 'pool' (MaxPool)", "kernel 1000x1000", "exceeds the input 4x4"]),
    (helper.make_node("Conv", ["x", "w"], ["y"], name="conv", dilations=[400, 400]),
     ["node 'conv' (Conv)", "kernel 3x3", "reaching 801x801", "exceeds the input 4x4"]),
])
def test_a_kernel_larger_than_the_padded_input_is_named_not_blamed_on_dynamic_shapes(
        node: onnx.NodeProto, says: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    model = _save(tmp_path / "m.onnx", [node], [_value("x", [1, 1, 4, 4])],
                  [_value("y", [None, None, None, None])],
                  [_const("w", np.ones((1, 1, 3, 3), np.float32))])
    err = _fails(["opt", model], capsys, "m.onnx", *says, "make kernel_shape smaller")
    assert "--input-shape" not in err


def test_a_model_without_outputs_is_refused_not_quantized(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["r"], name="relu")],
                  [_value("x", [1, 4])], [])
    says = ["m.onnx", "no outputs", "'r'", "graph's outputs"]
    _fails(["opt", model], capsys, *says)
    err = _fails([model, "-o", str(tmp_path / "out.s")], capsys, *says)
    assert "quantiz" not in err and not (tmp_path / "out.s").exists()


# ---- IR the verifier rejects right after import names the file and the node ------------

@pytest.mark.parametrize(("node", "shapes", "says"), [
    (helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"), {"b": (5,)},
     ["node 'conv' (Conv)", "bias [5] must have 3 elements"]),
    (helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=3), {"w": (3, 1, 3, 3)},
     ["node 'conv' (Conv)", "group=3"]),
    (helper.make_node("Gemm", ["f", "g", "b"], ["y"], name="fc", transB=1), {"b": (5,)},
     ["node 'fc' (Gemm)", "bias [5]"]),
])
def test_a_node_the_verifier_rejects_after_import_is_named_with_its_file(
        node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], says: list[str],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = {"w": (3, 2, 3, 3), "b": (3,), "g": (3, 4), **shapes}
    inits = [_const(name, np.ones(shape, np.float32)) for name, shape in arrays.items()
             if name in node.input]
    image = node.op_type == "Conv"
    inputs = [_value("x", [1, 2, 4, 4])] if image else [_value("f", [1, 4])]
    model = _save(tmp_path / "m.onnx", [node], inputs,
                  [_value("y", [1, 3, 2, 2] if image else [1, 3])], inits)
    for args in (["opt", model], [model, "-o", str(tmp_path / "out.s")]):
        err = _fails(args, capsys, "m.onnx", *says, "correct the node in the model")
        assert "invalid IR" not in err


# ---- passes run out of order ------------------------------------------------------------

@pytest.mark.parametrize(("pipeline", "says"), [
    ("canonicalize,fold-qdq,lower,tile,schedule",
     ["pass 'schedule' needs the results of 'place'",
      "-p canonicalize,fold-qdq,lower,tile,place,schedule"]),
    ("canonicalize,fold-qdq,lower,schedule",
     ["pass 'schedule' needs the results of 'tile' and 'place'",
      "-p canonicalize,fold-qdq,lower,tile,place,schedule"]),
    ("canonicalize,fold-qdq,schedule",
     ["'lower', 'tile' and 'place'", "op 'conv1' (conv) is not lowered"]),
])
def test_a_pass_run_before_the_passes_it_needs_names_them(
        pipeline: str, says: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    model = _qdq_conv(tmp_path / "m.onnx")
    _fails(["opt", "-p", pipeline, model], capsys, *says)


@pytest.mark.parametrize(("pipeline", "says"), [
    ("lower", ["pass 'lower' needs the results of 'fold-qdq'", "quantize 'c_q'",
               "-p fold-qdq,lower"]),
    ("canonicalize,lower", ["-p canonicalize,fold-qdq,lower"]),
    ("tile", ["pass 'tile' needs the results of 'fold-qdq' and 'lower'",
              "-p fold-qdq,lower,tile"]),
    ("schedule", ["'fold-qdq', 'lower', 'tile' and 'place'",
                  "-p fold-qdq,lower,tile,place,schedule"]),
])
def test_a_backend_pass_on_a_qdq_model_fold_qdq_has_not_folded_names_it(
        pipeline: str, says: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Unfolded, the QDQ conv looked like float host work: lower left it and printed it."""
    _fails(["opt", "-p", pipeline, _qdq_conv(tmp_path / "m.onnx")], capsys, *says)


def test_lower_on_a_float_model_says_the_op_is_float_not_that_fold_qdq_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"),
             helper.make_node("Relu", ["c"], ["y"], name="relu1")]
    model = _save(tmp_path / "m.onnx", nodes, [_value("x", [1, 1, 4, 4])],
                  [_value("y", [1, 2, 2, 2])], [_const("w", np.ones((2, 1, 3, 3), np.float32))])
    err = _fails(["opt", "-p", "lower", model], capsys, "op 'conv1' (conv) is float")
    assert "fold-qdq" not in err


def test_a_module_fold_qdq_has_run_on_is_lowered_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folded = tmp_path / "folded.cir"
    assert main(["opt", "-p", "canonicalize,fold-qdq", _qdq_conv(tmp_path / "m.onnx"),
                 "-o", str(folded)]) == 0
    assert main(["opt", "-p", "lower", str(folded)]) == 0
    assert "matvec(" in capsys.readouterr().out


def test_a_placed_module_may_be_scheduled_alone_but_not_after_tiling_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _qdq_conv(tmp_path / "m.onnx")
    placed = tmp_path / "placed.cir"
    front = "canonicalize,fold-qdq,lower,tile,place"
    assert main(["opt", "--target", "tiny", "-p", front, model, "-o", str(placed)]) == 0
    assert main(["opt", "--target", "tiny", "-p", "schedule", str(placed)]) == 0
    capsys.readouterr()
    _fails(["opt", "--target", "tiny", "-p", "tile,schedule", str(placed)], capsys,
           "pass 'schedule' needs the results of 'place'", "-p tile,place,schedule")


def test_a_model_with_batch_2_compiles_to_a_program_of_one_sample(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its two samples are two samples of a run (tests/test_batch.py)."""
    model = onnx.load(_qdq_conv(tmp_path / "m.onnx"))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(model, tmp_path / "m.onnx")
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.s"), "--target",
                 "tiny"]) == 0
    assert ".input " in (tmp_path / "out.s").read_text()


@pytest.mark.parametrize("bias_shape", [(), (1,), (1, 3)])
def test_a_gemm_with_a_constant_scalar_or_row_bias_is_quantized_and_simulated_exactly(
        bias_shape: tuple[int, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """onnxruntime's quantizer failed on such a bias ("array is 0-dimensional"); it gets
    the bias as N columns. The simulator equals the reference, which is within one
    quantum of the exact oracle on the quantized model."""
    from cimc.frontend.importer import import_onnx
    from cimc.frontend.quantize import quantize_onnx

    rng = np.random.default_rng(5)
    inits = [_const("w", rng.standard_normal((3, 4)).astype(np.float32)),
             _const("b", np.full(bias_shape, 0.75, np.float32))]
    float_model = _save(tmp_path / "float.onnx",
                        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
                        [_value("x", [1, 4])], [_value("y", [1, 3])], inits)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    model = str(tmp_path / "qdq.onnx")
    quantize_onnx(float_model, model, {"x": import_onnx(float_model).values["x"]}, {"x": x})
    _check_run(tmp_path, capsys, float_model, model, x, "--calibrate", str(tmp_path / "x.npy"))


@pytest.mark.parametrize("op", ["Relu", "Clip"])
def test_reference_relu_and_clip_on_plain_int8_equal_the_oracle(
        op: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """They computed float32 ("the module is inconsistent") for an i8 result."""
    bounds = [_const("lo", np.array(-2, np.int8)), _const("hi", np.array(3, np.int8))]
    node = helper.make_node(op, ["x", "lo", "hi"] if op == "Clip" else ["x"], ["y"], name="act")
    model = _save(tmp_path / "m.onnx", [node], [_value("x", [1, 6], TensorProto.INT8)],
                  [_value("y", [1, 6], TensorProto.INT8)], bounds if op == "Clip" else [])
    x = np.array([[-128, -3, -1, 0, 5, 127]], np.int8)
    got = _reference_run(model, {"x": x}, tmp_path, capsys)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, exact_outputs(model, {"x": x})[0])


@pytest.mark.parametrize(("node", "says"), [
    (helper.make_node("Mul", ["c", "k"], ["y"], name="scale"),
     ["op 'scale' (mul): the chip computes a mul only as a function of one tensor",
      "a constant varying along more than the channels", "end the model before it"]),
    (helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3],
                      pads=[1, 1, 1, 1]),
     ["op 'pool' (avg_pool) is float", "QDQ around this op"]),
])
def test_an_op_the_chip_cannot_run_after_quantizing_says_why_not_to_quantize(
        node: onnx.NodeProto, says: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """After --calibrate the model is quantized: "quantize the model (QDQ)" misled."""
    rng = np.random.default_rng(2)
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])
    nodes = [node] if node.op_type == "AveragePool" else [conv, node]
    model = _save(tmp_path / "m.onnx", nodes, [_value("x", [1, 2, 6, 6])],
                  [_value("y", [1, 2, 6, 6])],
                  [_const("w", rng.standard_normal((2, 2, 3, 3)).astype(np.float32)),
                   *([_const("k", rng.standard_normal((1, 1, 6, 6)).astype(np.float32))]
                     if node.op_type == "Mul" else [])])
    np.save(tmp_path / "x.npy", rng.standard_normal((4, 2, 6, 6)).astype(np.float32))
    err = _fails([model, "-o", str(tmp_path / "out.s"), "--target", "tiny", "--calibrate",
                  str(tmp_path / "x.npy")], capsys, *says)
    assert "quantize the model (QDQ) or" not in err


def test_sim_inputs_holding_different_numbers_of_samples_name_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["a", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "b"], ["y"], name="add")]
    model = _save(tmp_path / "m.onnx", nodes,
                  [_value("a", [1, 2, 4, 4]), _value("b", [1, 2, 4, 4])],
                  [_value("y", [1, 2, 4, 4])],
                  [_const("w", rng.standard_normal((2, 2, 3, 3)).astype(np.float32))])
    batches = {name: rng.standard_normal((4, 2, 4, 4)).astype(np.float32) for name in "ab"}
    np.savez(tmp_path / "good.npz", **batches)
    np.savez(tmp_path / "bad.npz", a=batches["a"], b=batches["b"][:2])
    program = str(tmp_path / "prog.s")
    assert main([model, "-o", program, "--target", "tiny", "--calibrate",
                 str(tmp_path / "good.npz")]) == 0
    _fails(["sim", program, "--inputs", str(tmp_path / "bad.npz")], capsys, "bad.npz",
           "'a' 4, 'b' 2", "give every input the same number")


@pytest.mark.parametrize("alpha", [np.inf, 0.0])
def test_gemm_alpha_inf_or_zero_is_refused_naming_the_node(
        alpha: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inf folded into an infinite weight scale ('invalid IR after pass canonicalize');
    0 was refused as 'flattening a [C,H,W] image changes its byte order'."""
    model = onnx.load(_qdq_conv(tmp_path / "m.onnx"))
    inits = [_const("fw", np.ones((3, 4), np.int8)), _const("fs", np.array(0.1, np.float32)),
             _const("fz", np.array(0, np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["fw", "fs", "fz"], ["wd"], name="w_dq"),
             helper.make_node("Gemm", ["xd", "wd"], ["g"], name="fc", transB=1, alpha=alpha),
             helper.make_node("QuantizeLinear", ["g", "xs", "xz"], ["gq"], name="g_q"),
             helper.make_node("DequantizeLinear", ["gq", "xs", "xz"], ["y"], name="g_dq")]
    inits += [i for i in model.graph.initializer if i.name in ("xs", "xz")]
    path = _save(tmp_path / "fc.onnx", nodes, [_value("x", [1, 4])], [_value("y", [1, 3])], inits)
    err = _fails([path, "-o", str(tmp_path / "out.s"), "--target", "tiny"], capsys,
                 "'fc' (gemm)", f"alpha={alpha:g}", "correct the Gemm's alpha")
    assert "invalid IR" not in err


# ---- a float op before the first quantize ----------------------------------------------

def test_a_float_op_before_the_first_quantize_is_named_as_such(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """onnxruntime's quantizer leaves a MaxPool that reads the float input unquantized; the
    message said it sat 'between integer layers'."""
    model = onnx.load(_qdq_conv(tmp_path / "m.onnx"))
    graph = model.graph
    graph.node.insert(0, helper.make_node("MaxPool", ["x"], ["p"], name="pool",
                                          kernel_shape=[1, 1]))
    graph.node[1].input[0] = "p"  # x_q now quantizes the pool's float result
    onnx.save(model, tmp_path / "pool.onnx")
    _fails([str(tmp_path / "pool.onnx"), "-o", str(tmp_path / "out.s"), "--target", "tiny"],
           capsys, "op 'pool' (max_pool) computes in float before the model's first "
           "QuantizeLinear", "quantize this op")


def _int16_qdq(path: Path) -> str:
    """A conv quantized by quantize_static with 16-bit activations (QInt16)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(0)
    source = _save(path / "f.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)],
                   [_value("x", [1, 2, 6, 6])], [_value("y", [1, 3, 6, 6])],
                   [_const("w", rng.normal(size=(3, 2, 3, 3)).astype(np.float32))])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter([{"x": rng.normal(size=(1, 2, 6, 6)).astype(np.float32)}
                              for _ in range(3)])

        def get_next(self) -> dict | None:
            return next(self.data, None)

    quantize_static(source, str(path / "q16.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt16, weight_type=QuantType.QInt8)
    return str(path / "q16.onnx")


def test_16_bit_activations_run_on_the_reference_and_are_refused_by_the_chip(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _int16_qdq(tmp_path)
    x = np.random.default_rng(1).normal(size=(1, 2, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", model, "--engine", "reference", "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy"), "-q"]) == 0
    scale = onnx.numpy_helper.to_array(next(
        i for i in onnx.load(model).graph.initializer if i.name.startswith("y_scale")))
    assert np.abs(np.load(tmp_path / "y.npy") - exact_outputs(model, {"x": x})[0]).max() \
        <= scale * 1.001
    _fails([model, "-o", str(tmp_path / "p.s")], capsys, "'x_QuantizeLinear' (quantize) makes "
           "i16 codes", "quantize them to int8 or uint8")
    assert not (tmp_path / "p.s").exists()


