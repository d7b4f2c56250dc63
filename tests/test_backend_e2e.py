"""End to end: compile QDQ models, simulate the program, and compare with the
reference interpreter bit for bit (and so with onnxruntime within a quantum)."""

from __future__ import annotations

from pathlib import Path

import backend_models
import models
import numpy as np
import pytest

import cimc
from cimc.analysis.traffic import hop_bytes, unit_cores, unit_edges
from cimc.diagnostics import CimcError
from cimc.host.ports import reference_codes
from cimc.isa.assembler import assemble_file, assemble_text
from cimc.isa.image import load_image
from cimc.isa.simulator import run_program
from cimc.reference.oracle import ExactOracle


def check_bit_exact(model: Path, target: str, tmp_path: Path, x: np.ndarray,
                    pipeline: str = "latency", replicate: float | None = None
                    ) -> tuple[cimc.Program, dict]:
    """Compile, save, simulate `x`, assert the outputs equal the reference; the report."""
    prog = tmp_path / "prog.s"
    compiled = cimc.compile(model, target, pipeline=pipeline,
                            stream=2 if pipeline == "throughput" else 0, replicate=replicate)
    compiled.save(prog)
    name = compiled.integer.inputs[0]
    inputs, expected = reference_codes(compiled.integer, {name: x})
    outputs, report = run_program(assemble_file(prog), load_image(prog.with_suffix(".img")),
                                  compiled.target, inputs)
    assert sorted(outputs) == sorted(expected)
    for port, codes in expected.items():
        np.testing.assert_array_equal(outputs[port], codes, err_msg=f"{model.name} on {target}")
    return compiled, report


SMALL = ["mnist_cnn", "mlp", "lenet5", "residual", "separable"]
MODES = ["latency", "throughput"]


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize(("target", "activations"), [("isaac", "int8"), ("pimcomp", "uint8")])
@pytest.mark.parametrize("pipeline", MODES)
def test_small_models_equal_reference(name: str, target: str, activations: str, pipeline: str,
                                      tmp_path: Path) -> None:
    x = models.sample_inputs(name, 3, seed=11)
    check_bit_exact(models.quantized_model(name, activations=activations), target, tmp_path, x,
                    pipeline)


@pytest.mark.parametrize("name", ["mnist_tiny", "mlp_tiny"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_tiny_target_spreads_partial_sums_over_cores(name: str, activations: str,
                                                     tmp_path: Path) -> None:
    x = backend_models.sample_inputs(name, 4, seed=5)
    compiled, report = check_bit_exact(backend_models.quantized_model(name, activations),
                                       "tiny", tmp_path, x)
    edges = unit_edges(compiled.module, compiled.target)
    cores = unit_cores(compiled.module)
    assert len(compiled.cores) >= 4
    assert any(e.kind == "psum" and cores[e.src] != cores[e.dst] for e in edges), \
        "row blocks of one column should sit on different cores"
    # The traffic model counts exactly the bytes times hops the simulator measures.
    assert report["hop_bytes"] == hop_bytes(edges, cores, compiled.target) > 0


@pytest.mark.parametrize("target", ["tiny", "isaac"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_concat_of_differently_quantized_convs_equals_reference(target: str, activations: str,
                                                                 tmp_path: Path) -> None:
    """Inception-style: onnxruntime gives each concatenated conv its own scale."""
    x = backend_models.sample_inputs("concat_tiny", 3, seed=1)
    compiled, _ = check_bit_exact(backend_models.quantized_model("concat_tiny", activations),
                                  target, tmp_path, x)
    concat = next(op for op in compiled.integer.ops() if op.kind == "concat")
    assert len({compiled.integer.values[v].quant for v in concat.inputs}) == 2


def _with_bias_entry(model: Path, initializer: str, channel: int, value: int,
                     tmp_path: Path) -> Path:
    """`model` with one entry of an int32 bias initializer set to `value`."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(model)
    tensor = next(t for t in proto.graph.initializer if t.name == initializer)
    bias = numpy_helper.to_array(tensor).copy()
    bias[channel] = value
    tensor.CopyFrom(numpy_helper.from_array(bias, initializer))
    path = tmp_path / f"{model.stem}-bias.onnx"
    onnx.save(proto, path)
    return path


@pytest.mark.parametrize("target", ["tiny", "isaac"])
@pytest.mark.parametrize(("initializer", "channel", "value"), [
    ("fc.bias_quantized", 2, 2**31 - 1),
    ("conv1.bias_quantized", 1, 2**31 - 1),
    ("conv2.bias_quantized", 3, -(2**31)),
])
def test_int32_extreme_bias_saturates_the_accumulator_as_the_reference_does(
        target: str, initializer: str, channel: int, value: int, tmp_path: Path) -> None:
    """The reference saturates conv/gemm accumulators to int32; the chip's adders wrap,
    so lower keeps them in range (the channel's result is saturated either way)."""
    model = _with_bias_entry(backend_models.quantized_model("mnist_tiny"), initializer,
                             channel, value, tmp_path)
    x = backend_models.sample_inputs("mnist_tiny", 4, seed=5)
    compiled, _ = check_bit_exact(model, target, tmp_path, x)
    if initializer.startswith("fc"):
        _, expected = reference_codes(compiled.integer, {"input": x})
        assert (expected["logits"][:, channel] == 127).all()


def _with_input_as_output(model: Path, tmp_path: Path) -> Path:
    """`model` whose graph input is also a graph output (after the model's own output)."""
    import onnx

    proto = onnx.load(model)
    proto.graph.output.append(proto.graph.input[0])
    path = tmp_path / f"{model.stem}-passthrough.onnx"
    onnx.save(proto, path)
    return path


@pytest.mark.parametrize("target", ["tiny", "isaac"])
@pytest.mark.parametrize("name", ["mnist_tiny", "mlp_tiny"])
def test_graph_input_that_is_a_graph_output_is_a_program_output(name: str, target: str,
                                                                tmp_path: Path) -> None:
    model = _with_input_as_output(backend_models.quantized_model(name), tmp_path)
    x = backend_models.sample_inputs(name, 3, seed=4)
    compiled, _ = check_bit_exact(model, target, tmp_path, x)
    program = assemble_file(tmp_path / "prog.s")
    assert [d.name for d in program.outputs] == ["logits", "input"]


def test_graph_input_that_is_a_graph_output_runs_on_sim_as_on_reference(tmp_path: Path) -> None:
    from cimc.cli import main

    model = _with_input_as_output(backend_models.quantized_model("mlp_tiny"), tmp_path)
    x = backend_models.sample_inputs("mlp_tiny", 3, seed=4)
    np.save(tmp_path / "x.npy", x)
    for engine in ("sim", "reference"):
        assert main(["run", str(model), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                     str(tmp_path / f"{engine}.npz"), "--engine", engine,
                     "--target", "tiny"]) == 0
    sim, reference = np.load(tmp_path / "sim.npz"), np.load(tmp_path / "reference.npz")
    assert sorted(sim) == sorted(reference) == ["input", "logits"]
    for key in sim:
        np.testing.assert_array_equal(sim[key], reference[key])
    np.testing.assert_array_equal(sim["input"].reshape(x.shape), x)


# Node and value names ONNX allows that break a line, a string or a comment when written raw.
HOSTILE_NAMES = ["a\nb", "esc\x1b[31m", 'q"uote\\', "cr\rlf", "ls\u2028x", "ff\x0cx",
                 "end*/c /*", "\x85nel", "r1", "tab\tx:", "del\x7f"]


def _with_hostile_names(model: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """`model` with every node, its input and its output renamed to hostile names."""
    import onnx

    proto = onnx.load(model)
    for i, node in enumerate(proto.graph.node):
        node.name = f"{HOSTILE_NAMES[i % len(HOSTILE_NAMES)]}{i}"
    names = {"input": 'in\n"put\x1b*/', "logits": 'lo"gi\\ts\r\n\u2028'}
    for node in proto.graph.node:
        node.input[:] = [names.get(v, v) for v in node.input]
        node.output[:] = [names.get(v, v) for v in node.output]
    for value in [*proto.graph.input, *proto.graph.output]:
        value.name = names.get(value.name, value.name)
    path = tmp_path / "hostile.onnx"
    onnx.save(proto, path)
    return path, names["input"], names["logits"]


@pytest.mark.parametrize("target", ["tiny", "isaac"])
def test_any_onnx_names_round_trip_through_program_and_data_header(target: str,
                                                                   tmp_path: Path) -> None:
    """Newlines, escapes, quotes and comment ends in names: the program assembles, its
    ports keep the model's names, it equals the reference, disassembles back, and the
    data header compiles."""
    import shutil
    import subprocess

    from cimc.cli import main
    from cimc.isa.disassembler import disassemble
    from cimc.isa.encoding import encode_program

    model, x_name, y_name = _with_hostile_names(backend_models.quantized_model("mnist_tiny"),
                                                tmp_path)
    x = backend_models.sample_inputs("mnist_tiny", 2, seed=6)
    check_bit_exact(model, target, tmp_path, x)
    program = assemble_file(tmp_path / "prog.s")
    assert [d.name for d in program.inputs] == [x_name]
    assert [d.name for d in program.outputs] == [y_name]
    again = assemble_text(disassemble(program), "again.s")
    assert encode_program(again) == encode_program(program)
    np.save(tmp_path / "x.npy", x)
    header = tmp_path / "hostile_data.h"
    assert main([str(model), "-o", str(tmp_path / "p2.s"), "--target", target,
                 "--emit-data", str(header), "--inputs", str(tmp_path / "x.npy")]) == 0
    assert header.read_text().isascii()
    cc = shutil.which("cc")
    if cc is not None:
        source = tmp_path / "use.c"
        source.write_text('#include "hostile_data.h"\n'
                          "int first(void) { return hostile_output[0][0] + "
                          "hostile_input[0][0]; }\n")
        subprocess.run([cc, "-c", "-Wall", "-Werror", "-I", str(tmp_path), str(source), "-o",
                        str(tmp_path / "use.o")], check=True)


def test_simulated_logits_within_one_quantum_of_exact_oracle(tmp_path: Path) -> None:
    from cimc.isa.simulator import run_float

    model = models.quantized_model("mnist_cnn", activations="uint8")
    x = models.sample_inputs("mnist_cnn", 4, seed=2)
    prog = tmp_path / "prog.s"
    compiled = cimc.compile(model, "isaac")
    compiled.save(prog)
    program = assemble_file(prog)
    got, _ = run_float(program, load_image(prog.with_suffix(".img")), compiled.target,
                       {"input": x.transpose(0, 2, 3, 1)})
    want = ExactOracle(model).run_samples(x, "input")
    scale = program.outputs[0].scale
    assert np.abs(got["logits"] - want).max() <= scale * 1.001
    assert (got["logits"].argmax(1) == want.argmax(1)).all()


# The minute-long cases are `heavy` (make test-all); make test keeps one of each model.
HEAVY = pytest.mark.heavy


@pytest.mark.slow
@pytest.mark.parametrize(("name", "target", "activations", "pipeline", "replicate"), [
    pytest.param("resnet18", "isaac", "int8", "latency", None, marks=HEAVY),
    ("resnet18", "pimcomp", "uint8", "throughput", 0.9),
    pytest.param("mobilenetv2", "isaac", "int8", "throughput", 0.9, marks=HEAVY),
    ("mobilenetv2", "pimcomp", "uint8", "latency", None),
    ("vgg11", "isaac", "int8", "latency", 0.9),
    ("vgg11", "pimcomp", "uint8", "throughput", None),
])
def test_large_cnns_equal_reference(name: str, target: str, activations: str, pipeline: str,
                                    replicate: float | None, tmp_path: Path) -> None:
    x = backend_models.sample_inputs(name, 2, seed=3)
    check_bit_exact(backend_models.quantized_model(name, activations), target, tmp_path, x,
                    pipeline, replicate)


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["vgg16", "vgg19", "resnet18_224"])
@pytest.mark.parametrize("pipeline", MODES)
def test_benchmark_cnns_equal_reference(name: str, pipeline: str, tmp_path: Path) -> None:
    x = backend_models.sample_inputs(name, 1, seed=4)
    check_bit_exact(backend_models.quantized_model(name, "uint8"), "pimcomp", tmp_path, x,
                    pipeline, 0.9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "vgg11"])
def test_large_cnns_do_not_fit_tiny_without_phases(name: str, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.toml"
    fixed.write_text((Path(__file__).parents[1] / "targets" / "tiny.toml").read_text()
                     .replace("reprogrammable = true", "reprogrammable = false"))
    with pytest.raises(CimcError, match="crossbars"):
        cimc.compile(backend_models.quantized_model(name), fixed).save(tmp_path / "p.s")


def test_float_gemm_tail_reading_dequantized_weights_stays_on_the_host(tmp_path: Path) -> None:
    """DequantizeLinear -> Flatten -> Gemm (no QDQ after the Flatten) leaves the Gemm float, on
    the host; its weights' DequantizeLinear is no program output (it was, and emit-asm failed
    with "value 'w...' has no global address")."""
    from fuzz_models import ConvSpec, QdqBuilder, Quant

    b = QdqBuilder(np.random.default_rng(0))
    x = b.input((1, 2, 4, 4), Quant(0.05, -3, True))
    y = b.conv(x, ConvSpec(4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu", "small"),
               np.full(4, 0.01, np.float32), Quant(0.02, -128, True), False)
    y = b.head(y, 5, "gemm", np.full(5, 0.01, np.float32), Quant(0.1, 3, True), "small", "",
               False, qdq_flatten=False)
    model = b.g.save(tmp_path / "m.onnx", x, [y])
    rng = np.random.default_rng(1)
    compiled, _ = check_bit_exact(model, "tiny", tmp_path, rng.standard_normal((3, 2, 4, 4)))
    assert [op.kind for op in compiled.module.ops() if op.kind == "gemm"] == ["gemm"]


@pytest.mark.parametrize("target", ["tiny", "isaac"])
def test_dilated_windows_fed_by_a_chip_layer_get_their_rows(target: str, tmp_path: Path) -> None:
    """A dilated conv or max pool receives rows out of order (0, 2, 4 then 1, 3, 5) from
    the layer before it; each row has its own tag, so no row is taken for another (they
    came over one tag in the producer's order, and the sums were off)."""
    from fuzz_models import ConvSpec, PoolSpec, QdqBuilder, Quant

    b = QdqBuilder(np.random.default_rng(0))
    x = b.input((1, 2, 6, 6), Quant(0.05, -3, True))
    y = b.activation(x, "relu", Quant(0.03, -128, True))
    y = b.conv(y, ConvSpec(3, (3, 3), (1, 1), (2, 1, 0, 2), (2, 2), 1, "", "small"),
               np.full(3, 0.01, np.float32), Quant(0.02, 5, True), False)
    y = b.pool(y, PoolSpec("max", (2, 2), (1, 1), (0, 0, 0, 0), (2, 1)), y.quant)
    model = b.g.save(tmp_path / "m.onnx", x, [y])
    check_bit_exact(model, target, tmp_path, np.random.default_rng(1).standard_normal((3, 72)))


@pytest.mark.parametrize(("name", "shape"), [("mlp_softmax_tiny", (3, 10)),
                                             ("mlp_softmax_reshape_tiny", (3, 10, 1, 1))])
def test_float_tail_after_a_quantized_softmax_stays_on_the_host(name: str, shape: tuple,
                                                                 tmp_path: Path) -> None:
    """Softmax -> quantize (-> reshape of the codes, as SqueezeNet ends) -> dequantize
    after the chip's output: one program output (the logits' codes), the host finishes;
    sim equals reference."""
    from cimc.cli import main

    model = backend_models.quantized_model(name)
    np.save(tmp_path / "x.npy", backend_models.sample_inputs(name, 3, seed=2))
    for engine in ("sim", "reference"):
        assert main(["run", str(model), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                     str(tmp_path / f"{engine}.npy"), "--engine", engine,
                     "--target", "tiny"]) == 0
    sim, reference = np.load(tmp_path / "sim.npy"), np.load(tmp_path / "reference.npy")
    assert sim.shape == shape
    np.testing.assert_allclose(sim.reshape(3, 10).sum(axis=1), 1.0, atol=0.05)
    np.testing.assert_array_equal(sim, reference)


def _between_convs(path: Path, op_type: str) -> tuple[Path, np.ndarray]:
    """conv -> `op_type` over the channels (named 'mid') -> conv, float, and inputs."""
    from models import save_graph
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal((4, c, 3, 3)).astype(np.float32) / 4,
                                 f"w{k}") for k, c in enumerate((3, 4))]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op_type, ["c"], ["s"], name="mid", axis=1),
             helper.make_node("Conv", ["s", "w1"], ["output"], pads=[1, 1, 1, 1])]
    x = rng.standard_normal((3, 3, 4, 4)).astype(np.float32)
    return save_graph(path, nodes, [1, 3, 4, 4], [1, 4, 4, 4], w), x


@pytest.mark.parametrize("target", ["tiny", "isaac"])
def test_float_op_between_integer_layers_is_an_error_not_host_work(target: str,
                                                                   tmp_path: Path) -> None:
    """A LogSoftmax over the channels (float only) between convs: the layers after it are
    chip work, so it cannot go to the host; the compile names it instead of moving the
    rest of the model to the host unchecked."""
    path, x = _between_convs(tmp_path / "m.onnx", "LogSoftmax")
    with pytest.raises(CimcError, match=r"op 'mid' \(log_softmax\) computes in float "
                                        r"between integer layers.*quantize this op"):
        cimc.compile(path, target, calibrate={"input": x}).save(tmp_path / "p.s")
    assert not (tmp_path / "p.s").exists()


def test_a_softmax_over_the_channels_between_convs_runs_on_the_chip(tmp_path: Path) -> None:
    """Read through a transpose as tokens of C scores: the chip's pixel_softmax."""
    path, x = _between_convs(tmp_path / "m.onnx", "Softmax")
    program = cimc.compile(path, "isaac", calibrate={"input": x})
    assert [op.kind for op in program.module.ops()].count("pixel_softmax") == 1
    np.testing.assert_array_equal(program.simulate(x).outputs["output"],
                                  cimc.run_reference(program.integer, {"input": x})["output"])


def test_host_work_is_the_input_quantize_and_the_float_tail(tmp_path: Path) -> None:
    from cimc.emit.report import host_work

    tail = ["(quantize)", "(dequantize)", "(softmax)", "(quantize)"]
    for name, rest in (("mlp_softmax_tiny", []), ("mlp_softmax_reshape_tiny", ["(reshape)"])):
        compiled = cimc.compile(backend_models.quantized_model(name), "tiny")
        kinds = [work.rsplit(" ", 1)[1] for work in host_work(compiled.module)]
        assert kinds == [*tail, *rest, "(dequantize)"], name


def test_cimc_run_engine_sim_equals_engine_reference(tmp_path: Path) -> None:
    from cimc.cli import main

    model = models.quantized_model("residual", activations="uint8")
    np.save(tmp_path / "x.npy", models.sample_inputs("residual", 3, seed=8))
    for engine in ("sim", "reference"):
        assert main(["run", str(model), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                     str(tmp_path / f"{engine}.npy"), "--engine", engine,
                     "--target", "pimcomp"]) == 0
    sim, reference = np.load(tmp_path / "sim.npy"), np.load(tmp_path / "reference.npy")
    assert sim.shape == (3, 10)
    np.testing.assert_array_equal(sim, reference)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", pytest.param("resnet50", marks=HEAVY),
                                  pytest.param("vgg19", marks=HEAVY),
                                  pytest.param("densenet121", marks=HEAVY),
                                  pytest.param("bvlc_alexnet", marks=HEAVY),
                                  pytest.param("zfnet512", marks=HEAVY),
                                  pytest.param("inception_v1", marks=HEAVY),
                                  pytest.param("inception_v2", marks=HEAVY)])
def test_onnx_zoo_graphs_compile_and_equal_reference(name: str, tmp_path: Path) -> None:
    """Structure-only graphs the onnx package ships (opset 9, random weights, quantized
    by cimc on random inputs): SqueezeNet's Softmax and the Reshape after it run on the
    host; ResNet-50's residual Sums are quantized as Adds; VGG-19 (143 M weights) runs in
    phases (about 80 s, 2.8 GB); DenseNet-121's batch norms after concats are depthwise
    convs; AlexNet's, ZFNet's and Inception-v1's LRNs are integer ops
    (passes/fold_qdq/lrn.py; AlexNet 34 s, ZFNet 60 s); ShuffleNet's 16 channel shuffles
    (reshape, transpose, reshape) are gathers; the padded average pools without
    count_include_pad of ShuffleNet and the Inceptions divide their border windows by
    fewer positions. Bit-exact at the program's outputs and after the host's tail."""
    import onnx

    from cimc.reference import run_module

    model = Path(onnx.__file__).parent / f"backend/test/data/light/light_{name}.onnx"
    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
    compiled, _ = check_bit_exact(model, "pimcomp", tmp_path, x)
    expected = run_module(compiled.integer, {compiled.integer.inputs[0]: x})
    simulated = compiled.simulate(x).outputs
    for output, values in simulated.items():
        np.testing.assert_array_equal(values, expected[output])


def test_a_float_sum_of_three_is_quantized_as_adds(tmp_path: Path) -> None:
    """Sum (as older exporters write residual adds) of three convs, float: cimc's
    quantization turns it into two Adds, which run on the chip bit-exactly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for k in range(3):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((4, 2, 3, 3)) * 0.3).astype(np.float32), f"w{k}"))
        nodes.append(helper.make_node("Conv", ["x", f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]))
    nodes += [helper.make_node("Sum", ["c0", "c1", "c2"], ["s"]),
              helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "sum3",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              inits)
    model = tmp_path / "sum3.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    compiled, _ = check_bit_exact(model, "isaac", tmp_path, x)
    kinds = [op.kind for op in compiled.integer.ops()]
    assert kinds.count("add") == 2 and "sum" not in kinds


def test_a_batch_norm_after_a_concat_is_quantized_as_a_depthwise_conv(tmp_path: Path) -> None:
    """DenseNet's and Inception-v2's BatchNormalization after a Concat (no conv to fold
    into; onnxruntime's quantizer leaves it float between integer layers), followed by a
    per-channel Mul and Add (Caffe's Scale): cimc's quantization turns the batch norm
    into the depthwise 1x1 conv it equals, the Mul and Add fold into it, and the model
    runs on the chip bit-exactly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 2, 3, 3)) * 0.3)
                                     .astype(np.float32), f"w{k}") for k in range(3)]
    for name, values in (("scale", rng.uniform(0.5, 1.5, 8)), ("bias", rng.normal(0, 0.1, 8)),
                         ("mean", rng.normal(0, 0.1, 8)), ("var", rng.uniform(0.5, 1.5, 8))):
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
    inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, (8, 1, 1)).astype(np.float32), "m"),
              numpy_helper.from_array(rng.normal(0, 0.1, (8, 1, 1)).astype(np.float32), "a")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["c0", "c1"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "scale", "bias", "mean", "var"],
                              ["bn"]),
             helper.make_node("Mul", ["bn", "m"], ["scaled"]),
             helper.make_node("Add", ["scaled", "a"], ["shifted"]),
             helper.make_node("Relu", ["shifted"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1], group=2)]
    inits[2] = numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.3)
                                       .astype(np.float32), "w2")
    graph = helper.make_graph(nodes, "bn_after_concat",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              inits)
    model = tmp_path / "bn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    compiled, _ = check_bit_exact(model, "isaac", tmp_path, x)
    kinds = [op.kind for op in compiled.integer.ops()]
    assert kinds.count("conv") == 4 and "batch_norm" not in kinds and "mul" not in kinds


def test_a_float_concat_in_the_hosts_tail_runs_on_the_host(tmp_path: Path) -> None:
    """A Slice and a Concat between a DequantizeLinear and a QuantizeLinear without QDQ of
    their own are the host's float tail: the host's concat is the IR's `concat`, not the
    chip's `join` (they once shared the name and the compile failed asking for the
    schedule pass). The program's results equal the reference's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cimc.cli import main

    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (
        ("s", np.float32(0.05)), ("z", np.int8(0)), ("w", np.ones((4, 2, 1, 1), np.int8)),
        ("ws", np.float32(0.1)), ("st", np.array([0])), ("en", np.array([2])),
        ("ax", np.array([1])))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "z"], ["wd"]),
             helper.make_node("Conv", ["d", "wd"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
             helper.make_node("Slice", ["cd", "st", "en", "ax"], ["sl"]),
             helper.make_node("Concat", ["sl", "cd"], ["cat"], axis=1),
             helper.make_node("QuantizeLinear", ["cat", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "m.onnx")
    compiled = cimc.compile(tmp_path / "m.onnx", "isaac")
    assert [op.kind for op in compiled.module.ops() if op.kind == "concat"] == ["concat"]
    np.save(tmp_path / "x.npy",
            np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32))
    for engine in ("sim", "reference"):
        assert main(["run", str(tmp_path / "m.onnx"), "--inputs", str(tmp_path / "x.npy"),
                     "--outputs", str(tmp_path / f"{engine}.npy"), "--engine", engine,
                     "-q"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "sim.npy"),
                                  np.load(tmp_path / "reference.npy"))


@pytest.mark.parametrize("order", ["x+c", "c+x"])
def test_an_add_of_a_per_channel_constant_is_a_scale_with_offsets(order: str,
                                                                  tmp_path: Path) -> None:
    """conv -> Add of a [1,C,1,1] constant (either operand) -> conv, quantized by
    quantize_static as exported: the add's own integer semantics as the chip's `scale` {offsets},
    bit-exact, within a quantum of the oracle."""
    import models
    from onnx import helper, numpy_helper

    from cimc.reference.oracle import ExactOracle

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) / 3,
                                     "w0"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) / 3,
                                     "w1"),
             numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32),
                                     "c")]
    operands = ["h", "c"] if order == "x+c" else ["c", "h"]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", operands, ["s"]),
             helper.make_node("Conv", ["s", "w1"], ["output"], pads=[1, 1, 1, 1])]
    path = models.save_graph(tmp_path / "m.onnx", nodes, [1, 3, 6, 6], [1, 4, 6, 6], inits)
    model = models.quantize_qdq(path, rng.standard_normal((8, 3, 6, 6)).astype(np.float32),
                                "int8", pre_process=False)
    program = cimc.compile(model, "isaac")
    assert [op.attrs.get("offsets") for op in program.module.ops()
            if op.kind == "scale"] == [1]
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    reference = cimc.run_reference(program.integer, {"input": x})["output"]
    np.testing.assert_array_equal(program.simulate(x).outputs["output"], reference)
    quantum = next(program.integer.values[op.inputs[0]].quant.scale[0]
                   for op in program.integer.ops()
                   if op.kind == "dequantize" and op.outputs[0] in program.integer.outputs)
    assert np.abs(reference - ExactOracle(model).run_samples(x)).max() <= quantum * 1.0001
