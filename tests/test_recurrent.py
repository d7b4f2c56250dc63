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
from checks import assert_simulation_equals_reference
from onnx import TensorProto, helper, numpy_helper

import cimc
import cimc.targets
from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.frontend.importer import import_onnx
from cimc.passes.lower.recurrent import unroll_recurrent
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


def test_the_chip_refuses_every_float_recurrent_layer_in_one_message() -> None:
    """Left float (no calibration data), one CimcError names every recurrent op and what
    would quantize it."""
    model = recurrent_models.quantized_model("gru2_bi", "legacy")
    with pytest.raises(CimcError, match=r"op '/rnn/GRU' \(gru, float: onnxruntime's "
                       r"quantizer leaves it float; .*--calibrate.*op '/rnn/GRU_1' \(gru, "
                       r"float"):
        cimc.compile(model, "isaac")


# name, exporter, target: one fast case; the others (each classifier on both targets, the
# bidirectional ones in phases on edge: seconds each) run with --runslow.
CHIP_CASES = [pytest.param("lstm", "legacy", "isaac", id="lstm-legacy-isaac")] + [
    pytest.param(name, exporter, target, id=f"{name}-{exporter}-{target}",
                 marks=pytest.mark.slow)
    for name, exporter in recurrent_models.CASES for target in ("isaac", "edge")
    if (name, exporter, target) != ("lstm", "legacy", "isaac")
    and (exporter == "legacy" or name in ("lstm", "gru"))]


@pytest.mark.parametrize(("name", "exporter", "target"), CHIP_CASES)
def test_quantized_recurrent_classifiers_run_on_the_chip_bit_exact(
        name: str, exporter: str, target: str, tmp_path: Path) -> None:
    """The QDQ classifier with its recurrent layers quantized from calibration data
    compiles (each step's gemms on crossbars, the gates through tables; on edge over
    phases) and the simulated program equals the reference bit for bit; the reference
    is near the oracle as test_quantized_recurrent_layers_stay_near_the_exact_oracle
    measures."""
    model = recurrent_models.quantized_model(name, exporter)
    program = cimc.compile(model, target,
                           calibrate={"input": recurrent_models.sample_inputs(8, seed=0)})
    assert not any(op.kind in ("lstm", "gru") for op in program.module.ops())
    program.save(tmp_path / "prog.s")
    assert_simulation_equals_reference(program, tmp_path / "prog.s",
                                       recurrent_models.sample_inputs(3, seed=5))


SHAPED_CASES = [pytest.param(name, exporter, target, id=f"{name}-{exporter}-{target}",
                             marks=() if (exporter, target) == ("legacy", fast)
                             else pytest.mark.slow)
                for name, fast in zip(recurrent_models.SHAPES,
                                      ("isaac", "edge", "edge", "isaac", "edge", "isaac"),
                                      strict=True)
                for exporter in recurrent_models.EXPORTERS for target in ("isaac", "edge")]


@pytest.mark.parametrize(("name", "exporter", "target"), SHAPED_CASES)
def test_taggers_means_over_time_and_conv1d_front_ends_run_on_the_chip(
        name: str, exporter: str, target: str, tmp_path: Path) -> None:
    """A GRU read by a Linear on every step (the gemm of ONNX's MatMul+Add fused into a
    Gemm of the tokens), by a mean over time (the layout ops between move codes, the mean
    is an average over the tokens; a bidirectional LSTM's two directions too), by a Tanh
    of its last step, or fed by a Conv1d (the 1-D signal given back as a sequence): near
    the oracle as the classifiers are, and bit-exact on the chip. Attention pooling's
    softmax over time is the chip's pixel_softmax of the scores read as one row."""
    model = recurrent_models.shaped_model(name, exporter)
    calibration = {"input": recurrent_models.sample_inputs(8, seed=0)}
    x = recurrent_models.sample_inputs(8, seed=7)
    module = cimc.api.prepare(model, calibrate=calibration)
    got = cimc.run_reference(module, {"input": x})["logits"]
    expected = ExactOracle(model).run_samples(x)
    scale = next(module.values[op.inputs[0]].quant.scale[0] for op in module.ops()
                 if op.kind == "dequantize" and op.outputs[0] in module.outputs)
    assert np.abs(got - expected).max() / scale <= LARGEST_QUANTA * 1.0001
    program = cimc.compile(model, target, calibrate=calibration)
    program.save(tmp_path / "prog.s")
    assert_simulation_equals_reference(program, tmp_path / "prog.s", x[:2])


@pytest.mark.parametrize(("name", "exporter", "target"), [
    ("gru", "legacy", "edge"),
    pytest.param("gru", "dynamo", "isaac", marks=pytest.mark.slow),
    pytest.param("lstm2_bi_hn", "legacy", "isaac", marks=pytest.mark.slow),
    pytest.param("lstm2_bi_hn", "dynamo", "edge", marks=pytest.mark.slow),
])
def test_a_batch_of_sequences_baked_into_the_export_runs_sample_by_sample(
        name: str, exporter: str, target: str, tmp_path: Path) -> None:
    """A classifier exported with 4 sequences (the batch on axis 1 of the recurrent
    layers, behind the exporter's transposes): the program computes one sequence, a run
    takes the samples stacked, bit-exact with the reference running the batch, which
    is as near the oracle as the batch-1 classifier."""
    model = recurrent_models.batched_model(name, exporter)
    calibration = {"input": recurrent_models.sample_inputs(8, seed=0)}
    program = cimc.compile(model, target, calibrate=calibration)
    assert program.module.values[program.module.inputs[0]].shape == \
        (1, *recurrent_models.INPUT_SHAPE[1:])
    x = recurrent_models.sample_inputs(8, seed=7)  # two batches of 4
    program.save(tmp_path / "prog.s")
    assert_simulation_equals_reference(program, tmp_path / "prog.s", x)
    got = cimc.run_reference(program.integer, {"input": x})["logits"]
    expected = ExactOracle(model).run_samples(x, batch=4)
    scale = next(program.integer.values[op.inputs[0]].quant.scale[0]
                 for op in program.integer.ops()
                 if op.kind == "dequantize" and op.outputs[0] in program.integer.outputs)
    assert np.abs(got - expected).max() / scale <= LARGEST_QUANTA * 1.0001


def _lstm_parameters(rng: np.random.Generator, hidden: int, features: int,
                     **states: np.ndarray) -> list:
    """Initializers W, R, B (zero) of a one-direction LSTM and the given `states`."""
    return [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.standard_normal((1, 4 * hidden, features))),
        ("R", rng.standard_normal((1, 4 * hidden, hidden))),
        ("B", np.zeros((1, 8 * hidden))), *states.items())]


def test_initial_states_that_differ_per_sample_of_a_batch_are_named(tmp_path: Path) -> None:
    """A batch of 4 sequences whose LSTM starts each from its own state cannot run one
    sample at a time: the op and its state are named."""
    rng = np.random.default_rng(0)
    hidden, features = 4, 3
    inits = _lstm_parameters(rng, hidden, features, h0=np.zeros((1, 4, hidden)),
                             c0=rng.standard_normal((1, 4, hidden)))
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["t", "W", "R", "B", "", "h0", "c0"], ["", "y"],
                              name="cell", hidden_size=hidden)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, hidden])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]),
              tmp_path / "m.onnx")
    samples = rng.standard_normal((8, 5, features)).astype(np.float32)
    with pytest.raises(CimcError, match=r"op 'cell.forward' \(lstm\): initial state .* differs "
                                        r"from sample to sample"):
        cimc.compile(tmp_path / "m.onnx", "isaac", calibrate={"x": samples})


def test_the_steps_copies_of_r_share_their_cells_on_one_core() -> None:
    """On edge (one core) every step's gemm of a gate's R reads the same programmed
    cells: one crossbar group per distinct block (W and R per gate, the classifier),
    not one per step, and the model runs in one phase."""
    model = recurrent_models.quantized_model("lstm", "legacy")
    program = cimc.compile(model, "edge",
                           calibrate={"input": recurrent_models.sample_inputs(8, seed=0)})
    matvecs = [op for op in program.module.ops() if op.kind == "matvec"]
    groups = {(core, group) for op in matvecs
              for core, group in zip(op.attrs["block_cores"], op.attrs["block_groups"],
                                     strict=True)}
    steps = recurrent_models.STEPS
    assert len(matvecs) == 4 + 4 * steps + 1
    assert len(groups) == 4 + 4 + 1
    assert program.report.get("phase_count", 1) == 1
    # Each step's gemms and takes refresh their one input row whole, in scratch, so the
    # bands kept for the run do not grow with the steps: only the input sequence's one
    # row, which every row of its transpose (x as an image of T rows) reads, is kept.
    assert [(code.bands, code.kept) for code in program.cores.values()] == \
        [(1, steps * recurrent_models.FEATURES)]


@pytest.mark.slow
def test_a_keyword_spotting_gru_runs_on_edge_in_one_phase(tmp_path: Path) -> None:
    """The GRU of a keyword spotter at its usual size (49 frames of 40 features, hidden 64)
    fits edge in one phase (the steps' copies of R share their cells, their tables are
    kept once) and simulates bit-exact."""
    program = cimc.compile(recurrent_models.kws_model(), "edge",
                           calibrate={"input": recurrent_models.kws_inputs(8, seed=0)})
    assert program.report.get("phase_count", 1) == 1
    program.save(tmp_path / "prog.s")
    assert_simulation_equals_reference(program, tmp_path / "prog.s",
                                       recurrent_models.kws_inputs(2, seed=4))


def test_tables_beyond_local_memory_are_named(tmp_path: Path) -> None:
    """An edge chip with 8 KiB of local memory cannot keep the GRU's requantization and
    lookup tables: placement says so (not that crossbars are missing)."""
    text = (Path(cimc.targets.__file__).parent / "edge.toml").read_text()
    text = text.replace("local_memory_bytes = 262144", "local_memory_bytes = 8192")
    text = text.replace('name = "edge"', 'name = "small"')
    (tmp_path / "small.toml").write_text(text)
    model = recurrent_models.quantized_model("gru", "legacy")
    with pytest.raises(CimcError, match=r"constant tables .* need about \d+ bytes of local "
                                        r"memory but the 1 cores of target 'small' keep "
                                        r"4096 bytes each"):
        cimc.compile(model, str(tmp_path / "small.toml"),
                     calibrate={"input": recurrent_models.sample_inputs(8, seed=0)})


def test_an_initial_state_of_several_values_is_named(tmp_path: Path) -> None:
    """The chip starts a layer from one state value (zeros, as torch exports it); an
    initial_h constant of several values is named with what runs."""
    rng = np.random.default_rng(0)
    hidden, features = 4, 3
    inits = _lstm_parameters(rng, hidden, features, h0=rng.standard_normal((1, 1, hidden)))
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0"], ["y"], name="cell",
                            hidden_size=hidden)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, 1, hidden])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]),
              tmp_path / "m.onnx")
    samples = rng.standard_normal((4 * 5, 1, features)).astype(np.float32)  # 4 sequences
    with pytest.raises(CimcError, match=r"op 'cell.forward' \(lstm\): operand .*an initial state "
                                        r"of several values, is not run on the chip"):
        cimc.compile(tmp_path / "m.onnx", "isaac", calibrate={"x": samples})


@pytest.mark.parametrize("name", ["lstm", "gru2_bi"])
def test_a_quantized_step_is_the_composition_of_the_irs_integer_kinds(name: str) -> None:
    """Every quantized recurrent op, unrolled by `lower` into take/gemm/add/lut/mul ops,
    gives its Y, Y_h (and Y_c) and the logits bit for bit; the gate tables are the `lut`
    tables of sigmoid and tanh."""
    model = recurrent_models.quantized_model(name, "legacy")
    module = cimc.api.prepare(model, calibrate={"input": recurrent_models.sample_inputs(8, 0)})
    feeds = {"input": recurrent_models.sample_inputs(1, seed=3)}
    layers = [op for op in module.ops() if op.kind in ("lstm", "gru")]
    module.outputs = list(dict.fromkeys(
        [*module.outputs, *(out for op in layers for out in op.outputs)]))
    values = run_module(module, feeds)
    unroll_recurrent(module)
    assert {op.kind for op in module.ops()}.isdisjoint({"lstm", "gru"})
    assert {"gemm", "add", "lut", "mul", "take"} <= {op.kind for op in module.ops()}
    unrolled = run_module(module, feeds)
    assert sorted(unrolled) == sorted(values)
    for name, codes in values.items():
        np.testing.assert_array_equal(unrolled[name], codes)
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


@pytest.mark.parametrize(("layer", "exporter", "tagger", "target"), [
    ("LSTM", "legacy", False, "isaac"),
    pytest.param("GRU", "dynamo", False, "edge", marks=pytest.mark.slow),
    pytest.param("GRU", "legacy", True, "edge", marks=pytest.mark.slow),
    pytest.param("LSTM", "dynamo", True, "isaac", marks=pytest.mark.slow),
])
def test_time_major_sequences_are_one_sample_each(layer: str, exporter: str, tagger: bool,
                                                  target: str, tmp_path: Path) -> None:
    """torch's default layout, [T, 1, D]: axis 0 is the time, not a batch, so the program
    takes one sequence per sample ([T·1, D], the same bytes) and a run takes them
    stacked on axis 0 ([S·T, 1, D]); a tagger's [T, 1, C] output likewise. Bit-exact
    with the reference, which is as near the oracle as the batch-first classifiers."""
    model = recurrent_models.time_major_model(layer, exporter, tagger)
    steps, features = recurrent_models.STEPS, recurrent_models.FEATURES
    program = cimc.compile(model, target, calibrate={
        "input": recurrent_models.time_major_inputs(8, seed=0)})
    assert program.module.values["input"].shape == (1, steps, features)
    x = recurrent_models.time_major_inputs(3, seed=7)
    program.save(tmp_path / "prog.s")
    assert_simulation_equals_reference(program, tmp_path / "prog.s", x)
    got = cimc.run_reference(program.integer, {"input": x})["logits"]
    assert got.shape == ((3 * steps, 1, recurrent_models.CLASSES) if tagger
                         else (3, recurrent_models.CLASSES))
    np.testing.assert_array_equal(program.simulate(x).outputs["logits"], got)
    expected = ExactOracle(model).run_samples(x, batch=steps)
    scale = next(program.integer.values[op.inputs[0]].quant.scale[0]
                 for op in program.integer.ops()
                 if op.kind == "dequantize" and op.outputs[0] in program.integer.outputs)
    assert np.abs(got - expected).max() / scale <= LARGEST_QUANTA * 1.0001
