"""Recurrent layers (issue 13): ONNX LSTM, GRU and RNN (onnx's node test cases in float:
tests/test_node_cases.py). torch's nn.LSTM and nn.GRU classifiers
(batch_first, one and two layers, forward and bidirectional) exported by the legacy
exporter at opset 13 and by dynamo at opset 18, run by the reference against
onnxruntime; and the messages for what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import recurrent_models
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.frontend.importer import import_onnx
from cimc.ir.module import Module, Quant, TensorType
from cimc.reference import activation, recurrent, run_module
from cimc.reference.oracle import ExactOracle

RECURRENT_OPS = {"LSTM", "GRU", "RNN"}


@pytest.mark.parametrize(("name", "exporter"), recurrent_models.CASES)
def test_torch_exports_run_on_the_reference_as_onnxruntime_runs_them(
        name: str, exporter: str) -> None:
    """The float model, imported as it is, against onnxruntime (float32 throughout)."""
    path = recurrent_models.float_model(name, exporter)
    module = import_onnx(str(path))
    kinds = [op.kind for op in module.ops()]
    layer, layers, _ = recurrent_models.LAYERS[name]
    assert kinds.count(layer.lower()) == layers
    x = recurrent_models.sample_inputs(3, seed=5)
    got = run_module(module, {"input": x})["logits"]
    expected = ExactOracle(path).run_samples(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _lstm_model(tmp_path: Path, **attrs) -> Path:
    """X[5,1,3] -> LSTM(hidden 2) -> Y_h, with seeded weights and the given attributes
    (and a sequence_lens initializer when `lengths` is given)."""
    rng = np.random.default_rng(0)
    lengths = attrs.pop("lengths", None)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 8, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 8, 2)).astype(np.float32), "R")]
    inputs = ["X", "W", "R"]
    if lengths is not None:
        inits.append(numpy_helper.from_array(np.array(lengths, np.int32), "L"))
        inputs += ["", "L"]
    node = helper.make_node("LSTM", inputs, ["", "Y_h"], name="lstm", hidden_size=2, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 1, 3])],
        [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, 2])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    return path


@pytest.mark.parametrize(("attrs", "message"), [
    ({"activations": ["Relu", "Tanh", "Tanh"]}, "activations ['Relu', 'Tanh', 'Tanh'] are not "
     "supported; only ONNX's defaults (Sigmoid, Tanh, Tanh per direction)"),
    ({"input_forget": 1}, "input_forget=1"),
    ({"lengths": [3]}, "sequence_lens [3] differ from the time axis (5)"),
])
def test_unsupported_recurrent_forms_name_the_node(attrs: dict, message: str,
                                                    tmp_path: Path) -> None:
    with pytest.raises(CimcError, match=r"node 'lstm' \(LSTM\): ") as info:
        import_onnx(str(_lstm_model(tmp_path, **attrs)))
    assert message in str(info.value)


def test_whole_sequence_lengths_and_clip_run(tmp_path: Path) -> None:
    """sequence_lens equal to the time axis is dropped; clip bounds every pre-activation
    (onnxruntime as the oracle: onnx's reference evaluator ignores clip)."""
    for attrs in ({"lengths": [5]}, {"clip": 0.5}):
        path = _lstm_model(tmp_path, **attrs)
        x = np.random.default_rng(1).standard_normal((5, 1, 3)).astype(np.float32) * 3
        got = run_module(import_onnx(str(path)), {"X": x})["Y_h"]
        expected = ExactOracle(path).run({"X": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_quantize_static_leaves_the_recurrent_layers_float() -> None:
    """onnxruntime's QDQ quantizer has no LSTM/GRU quantizer: their weights stay float
    and no DequantizeLinear feeds them; its first QuantizeLinear comes after them."""
    for name in ("lstm", "gru2_bi"):
        model = onnx.load(recurrent_models.quantized_model(name, "legacy"))
        produced = {out: node.op_type for node in model.graph.node for out in node.output}
        layers = [n for n in model.graph.node if n.op_type in RECURRENT_OPS]
        assert len(layers) == recurrent_models.LAYERS[name][1]
        for node in layers:
            assert all(produced.get(i) != "DequantizeLinear" for i in node.input)
        first_quantize = next(i for i, n in enumerate(model.graph.node)
                              if n.op_type == "QuantizeLinear")
        assert first_quantize > max(list(model.graph.node).index(n) for n in layers)


# Measured distance of the quantized recurrent layers (8-bit states and gates) to the exact
# oracle, in quanta of the logits (whose range is 128..192 quanta): the largest over 32
# sequences and the median (docs/ir.md, "Quantized recurrent layers").
LARGEST_QUANTA, MEDIAN_QUANTA = 4, 1


@pytest.mark.parametrize(("name", "exporter"), recurrent_models.CASES)
def test_quantized_recurrent_layers_stay_near_the_exact_oracle(name: str, exporter: str
                                                               ) -> None:
    """The QDQ model with its recurrent layers quantized on the calibration data: every
    layer an integer op of one direction, the logits within LARGEST_QUANTA of onnxruntime
    running the QDQ model (recurrent layers float), the same class for all but at most one
    sequence."""
    model = recurrent_models.quantized_model(name, exporter)
    calibration = recurrent_models.sample_inputs(8, seed=0)
    module = cimc.api.prepare(model, calibrate={"input": calibration})
    layer, layers, bidirectional = recurrent_models.LAYERS[name]
    recurrent = [op for op in module.ops() if op.kind == layer.lower()]
    assert len(recurrent) == layers * (2 if bidirectional else 1)
    assert all(module.values[op.outputs[0]].dtype == "i8" for op in recurrent)
    x = recurrent_models.sample_inputs(32, seed=7)
    got = cimc.run_reference(module, {"input": x})["logits"]
    expected = ExactOracle(model).run_samples(x)
    dequantize = next(op for op in module.ops() if op.kind == "dequantize"
                      and op.outputs[0] in module.outputs)
    quanta = np.abs(got - expected) / module.values[dequantize.inputs[0]].quant.scale[0]
    assert quanta.max() <= LARGEST_QUANTA * 1.0001
    assert np.median(quanta) <= MEDIAN_QUANTA * 1.0001
    # A near tie may go the other way (one sequence of 32 for the GRU read through h_n).
    assert (got.argmax(1) == expected.argmax(1)).sum() >= len(x) - 1


def test_the_chip_refuses_every_recurrent_layer_in_one_message(tmp_path: Path) -> None:
    """Quantized (with calibration data) or left float (without), one CimcError names
    every recurrent op and what is missing."""
    model = recurrent_models.quantized_model("gru2_bi", "legacy")
    with pytest.raises(CimcError) as info:
        cimc.compile(model, "edge", calibrate={"input": recurrent_models.sample_inputs(8, 0)})
    message = str(info.value)
    for op in ("'/rnn/GRU.forward' (gru, quantized, forward)",
               "'/rnn/GRU.reverse' (gru, quantized, reverse)", "'/rnn/GRU_1.forward'",
               "'/rnn/GRU_1.reverse'", "the time steps as a loop in the program"):
        assert op in message
    with pytest.raises(CimcError, match=r"op '/rnn/GRU' \(gru, float: onnxruntime's "
                       r"quantizer leaves it float; .*op '/rnn/GRU_1' \(gru, float"):
        cimc.compile(model, "isaac")


def _unrolled(op, module: Module) -> Module:
    """The quantized lstm or gru `op` of `module` written out step by step in the IR's
    other kinds (gather, gemm, add, lut, mul; docs/ir.md, "Quantized recurrent layers"):
    the ops a lowering of it composes."""
    x_type = module.values[op.inputs[0]]
    steps, batch, _ = x_type.shape
    hidden = int(op.attrs["hidden_size"])
    gates = module.values[op.inputs[1]].shape[1] // hidden
    w, r, b, h0 = (module.constants[v] for v in op.inputs[1:5])
    h_quant = module.values[op.inputs[4]].quant
    scales = [float(s) for s in op.attrs["scales"]]
    out = Module("unrolled")
    out.add_input("x", x_type)

    def const(name: str, data: np.ndarray, quant: Quant | None = None) -> str:
        return out.add_constant(name, data, quant)

    def code(kind: str, inputs: list[str], scale: float, zero: int = 0,
             attrs: dict | None = None) -> str:
        shape = (batch, hidden if kind != "gemm" else gates * hidden)
        return out.add_op(kind, inputs, [TensorType(shape, "i8", Quant((scale,), (zero,)))],
                          attrs=attrs).outputs[0]

    def table(codes: np.ndarray) -> str:
        return const(out.fresh_name("table"), codes.astype(np.int8))

    def gate(codes: str, scale: float, k: int) -> str:
        return out.add_op("take", [codes], [TensorType((batch, hidden), "i8",
                                                       Quant((scale,), (0,)))],
                          attrs={"axes": [1],
                                 "index": list(range(k * hidden, (k + 1) * hidden))}).outputs[0]

    def per_channel(name: str, codes: np.ndarray, scales: tuple) -> str:
        return const(name, codes[0], Quant(scales, (0,) * len(scales), axis=0))

    w_name = per_channel("W", w, module.values[op.inputs[1]].quant.scale)
    r_name = per_channel("R", r, module.values[op.inputs[2]].quant.scale)
    s_x = module.values[op.inputs[0]].quant.scale[0]
    s_w = np.asarray(module.values[op.inputs[1]].quant.scale)
    s_r = np.asarray(module.values[op.inputs[2]].quant.scale)
    bx = const("bx", b[0, :gates * hidden], Quant(tuple(s_x * s_w), (0,) * len(s_w), axis=0))
    bh = const("bh", b[0, gates * hidden:],
               Quant(tuple(h_quant.scale[0] * s_r), (0,) * len(s_r), axis=0))
    s_h, gate_s, gate_z, tanh_s = h_quant.scale[0], 1 / 255, -128, 1 / 127
    h = const("h0", h0[0], h_quant)
    if op.kind == "lstm":
        s_c = module.values[op.inputs[5]].quant.scale[0]
        c = const("c0", module.constants[op.inputs[5]][0], module.values[op.inputs[5]].quant)
    order = range(steps - 1, -1, -1) if op.attrs["direction"] == "reverse" else range(steps)
    results = {}
    for t in order:
        step = out.add_op("take", ["x"], [TensorType((1, batch, x_type.shape[2]), x_type.dtype,
                                                     x_type.quant)],
                          attrs={"axes": [0], "index": [t]}).outputs[0]
        x_t = out.add_op("reshape", [step], [TensorType((batch, x_type.shape[2]), x_type.dtype,
                                                        x_type.quant)],
                         attrs={"shape": [batch, x_type.shape[2]]}).outputs[0]
        xg = code("gemm", [x_t, w_name, bx], scales[0])
        hg = code("gemm", [h, r_name, bh], scales[1])
        if op.kind == "lstm":
            pre = [code("add", [gate(xg, scales[0], k), gate(hg, scales[1], k)], scales[2 + k])
                   for k in range(4)]
            i, o, f = (code("lut", [pre[k], table(recurrent.sigmoid_table(scales[2 + k]))],
                            gate_s, gate_z) for k in range(3))
            g = code("lut", [pre[3], table(recurrent.tanh_table(scales[5]))], tanh_s)
            c = code("add", [code("mul", [f, c], s_c), code("mul", [i, g], s_c)], s_c)
            tc = code("lut", [c, table(recurrent.tanh_table(s_c))], tanh_s)
            h = code("mul", [o, tc], s_h)
        else:
            pre_z = code("add", [gate(xg, scales[0], 0), gate(hg, scales[1], 0)], scales[2])
            pre_r = code("add", [gate(xg, scales[0], 1), gate(hg, scales[1], 1)], scales[3])
            z = code("lut", [pre_z, table(recurrent.sigmoid_table(scales[2]))], gate_s, gate_z)
            keep = code("lut", [pre_z, table(recurrent.complement_table(scales[2]))], gate_s,
                        gate_z)
            reset = code("lut", [pre_r, table(recurrent.sigmoid_table(scales[3]))], gate_s,
                         gate_z)
            rh = code("mul", [reset, gate(hg, scales[1], 2)], scales[4])
            n = code("lut", [code("add", [gate(xg, scales[0], 2), rh], scales[5]),
                             table(recurrent.tanh_table(scales[5]))], tanh_s)
            h = code("add", [code("mul", [keep, n], s_h), code("mul", [z, h], s_h)], s_h)
        results[t] = h
    out.outputs = [results[t] for t in range(steps)]
    return out


@pytest.mark.parametrize("name", ["lstm", "gru2_bi"])
def test_a_quantized_step_is_the_composition_of_the_irs_integer_kinds(name: str) -> None:
    """Every quantized recurrent op, unrolled into gather/gemm/add/lut/mul ops, gives its
    Y bit for bit; the gate tables are the `lut` tables of sigmoid and tanh."""
    model = recurrent_models.quantized_model(name, "legacy")
    module = cimc.api.prepare(model, calibrate={"input": recurrent_models.sample_inputs(8, 0)})
    feeds = {"input": recurrent_models.sample_inputs(1, seed=3)}
    layers = [op for op in module.ops() if op.kind in ("lstm", "gru")]
    module.outputs = list(dict.fromkeys([op.inputs[0] for op in layers]
                                        + [op.outputs[0] for op in layers]))
    values = run_module(module, feeds)
    for op in layers:
        unrolled = _unrolled(op, module)
        steps = run_module(unrolled, {"x": values[op.inputs[0]]})
        np.testing.assert_array_equal(np.stack(list(steps.values()))[:, None],
                                      values[op.outputs[0]])
    scale = float(layers[0].attrs["scales"][2])
    np.testing.assert_array_equal(
        recurrent.sigmoid_table(scale),
        activation.table("sigmoid", {}, np.dtype(np.int8), scale, 0, np.dtype(np.int8),
                         1 / 255, -128))
    np.testing.assert_array_equal(
        recurrent.tanh_table(scale),
        activation.table("tanh", {}, np.dtype(np.int8), scale, 0, np.dtype(np.int8), 1 / 127, 0))


def test_cimc_run_quantizes_the_recurrent_layers_with_calibrate(tmp_path: Path) -> None:
    """The user's flow: a QDQ LSTM classifier, `--calibrate` data for the layer onnxruntime
    left float, `cimc run --engine reference`: the API's results."""
    model = recurrent_models.quantized_model("lstm", "dynamo")
    calibration = recurrent_models.sample_inputs(8, seed=0)
    x = recurrent_models.sample_inputs(2, seed=9)
    np.save(tmp_path / "cal.npy", calibration)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npz"
    assert main(["run", str(model), "--engine", "reference", "--calibrate",
                 str(tmp_path / "cal.npy"), "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(out), "-q"]) == 0
    module = cimc.api.prepare(model, calibrate={"input": calibration})
    np.testing.assert_array_equal(np.load(out)["logits"],
                                  cimc.run_reference(module, {"input": x})["logits"])
