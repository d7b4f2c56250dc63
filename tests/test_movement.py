"""Layout ops and resampling as data movement (issue 13): Pad, Slice, Split, Transpose
and the channel shuffle, Concat on any axis, reshapes that change the byte order,
Resize/Upsample nearest, ConvTranspose. Imported as `take`, `transpose`, `reshape`,
`concat` (ConvTranspose: zero insertion, a `take`, and a conv); lowered to `gather`
(passes/lower/movement.py) and run by `vgather`."""

from __future__ import annotations

from pathlib import Path

import movement_models
import numpy as np
import onnx
import pytest
from checks import assert_simulation_equals_reference, output_scale
from models import qdq_around
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.diagnostics import CimcError
from cimc.host.ports import reference_codes
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image
from cimc.isa.simulator import run_program
from cimc.reference.oracle import ExactOracle


def _simulate(program, tmp_path: Path, x: np.ndarray) -> None:
    prog = tmp_path / "p.s"
    program.save(prog)
    assert "vgather" in prog.read_text()
    assert_simulation_equals_reference(program, prog, x)


@pytest.mark.parametrize(("name", "exporter"), movement_models.CASES)
@pytest.mark.parametrize("activations", ["int8", "uint8"])
@pytest.mark.parametrize("target", ["isaac", "edge"])
def test_torch_models_simulate_bit_exact_within_a_quantum_of_the_oracle(
        name: str, exporter: str, activations: str, target: str, tmp_path: Path) -> None:
    model = movement_models.quantized_model(name, exporter, activations)
    x = movement_models.sample_inputs(name, 3, seed=11)
    program = cimc.compile(model, target)
    kinds = [op.kind for op in program.module.ops()]
    assert "gather" in kinds and not {"take", "transpose", "reshape"} & set(kinds)
    _simulate(program, tmp_path, x)
    reference = cimc.run_reference(program.integer, {"input": x})["out"]
    oracle = ExactOracle(model).run_samples(x)
    assert np.abs(reference - oracle).max() <= output_scale(program.integer) * 1.0001


@pytest.mark.parametrize("name", sorted(movement_models.INPUT_SHAPES))
def test_gathers_run_in_phases(name: str, tmp_path: Path) -> None:
    """On `tiny` the models run in 3-5 phases: gathers read and write tensors spilled
    between phases, bit-exact."""
    from cimc.dialect.phased import phase_count

    program = cimc.compile(movement_models.quantized_model(name, "legacy"), "tiny")
    assert phase_count(program.module) >= 3
    _simulate(program, tmp_path, movement_models.sample_inputs(name, 2, seed=3))


@pytest.mark.parametrize("name", sorted(movement_models.INPUT_SHAPES))
def test_gathers_stream_in_throughput_mode_with_replicas(name: str, tmp_path: Path) -> None:
    from test_backend_e2e import check_bit_exact

    check_bit_exact(movement_models.quantized_model(name, "legacy"), "pimcomp", tmp_path,
                    movement_models.sample_inputs(name, 2, seed=4), "throughput", 0.5)


def test_conv_transpose_is_zero_insertion_and_a_conv() -> None:
    module = cimc.api.prepare(movement_models.quantized_model("unet_convtranspose", "legacy"))
    kinds = [op.kind for op in module.ops()]
    assert "conv_transpose" not in kinds and kinds.count("take") == 2
    assert kinds.count("conv") == 6


def test_channel_shuffle_and_its_concat_are_one_gather() -> None:
    """Split halves, Concat, Reshape to 5-D, Transpose, Reshape back: the half the branch
    skips, the concat and the shuffle read the stem and the branch in one gather (each
    requantized to the concat's scale first); the other half is a gather of its own."""
    program = cimc.compile(movement_models.quantized_model("shufflenet_block", "legacy"),
                           "isaac")
    gathers = [op for op in program.module.ops() if op.kind == "gather"]
    assert sorted(len(op.inputs) - 1 for op in gathers) == [1, 2]


def _qdq(nodes: list, shape: list[int], out_shape: list[int], consts: list,
         scales: tuple[float, float] = (0.05, 0.05), zps: tuple[int, int] = (3, 3),
         opset: int = 18) -> onnx.ModelProto:
    """input -> Q -> DQ -> nodes (reading "xd", writing "t") -> Q -> DQ -> output, int8."""
    return qdq_around(nodes, shape, out_shape, consts, (TensorProto.INT8, scales[0], zps[0]),
                      (TensorProto.INT8, scales[1], zps[1]), opset, "move")


def _ints(name: str, values: list[int]):  # -> onnx.TensorProto
    return numpy_helper.from_array(np.array(values, np.int64), name)


LONE_OPS = {
    # name: (nodes, input shape, output shape, constants)
    "pad_constant": ([helper.make_node("Pad", ["xd", "p", "v"], ["t"])], [1, 4, 5, 6],
                     [1, 4, 8, 7], [_ints("p", [0, 0, 2, 0, 0, 0, 1, 1]),
                                    numpy_helper.from_array(np.array(0.5, np.float32), "v")]),
    "pad_edge": ([helper.make_node("Pad", ["xd", "p"], ["t"], mode="edge")], [1, 4, 5, 6],
                 [1, 4, 7, 9], [_ints("p", [0, 0, 1, 2, 0, 0, 1, 1])]),
    "slice_reversed": ([helper.make_node("Slice", ["xd", "s", "e", "a", "st"], ["t"])],
                       [1, 4, 6, 6], [1, 4, 3, 5],
                       [_ints("s", [-1, 5]), _ints("e", [-100, 0]), _ints("a", [2, 3]),
                        _ints("st", [-2, -1])]),
    "transpose_hw": ([helper.make_node("Transpose", ["xd"], ["t"], perm=[0, 1, 3, 2])],
                     [1, 3, 4, 7], [1, 3, 7, 4], []),
    "flatten": ([helper.make_node("Flatten", ["xd"], ["t"])], [1, 3, 4, 5], [1, 60], []),
    # the same bytes, but one row where two were, or pixels of other sizes: gathers
    "rows_into_one": ([helper.make_node("Transpose", ["xd"], ["t"], perm=[0, 3, 1, 2])],
                      [1, 1, 2, 6], [1, 6, 1, 2], []),
    "pixels_into_channels": ([helper.make_node("Transpose", ["xd"], ["t"], perm=[0, 3, 2, 1])],
                             [1, 1, 3, 2], [1, 2, 3, 1], []),
    "channels_last": ([helper.make_node("Transpose", ["xd"], ["t"], perm=[0, 2, 3, 1])],
                      [1, 3, 4, 5], [1, 4, 5, 3], []),
    "resize_down": ([helper.make_node("Resize", ["xd", "", "sc"], ["t"], mode="nearest",
                                      coordinate_transformation_mode="asymmetric",
                                      nearest_mode="ceil")], [1, 2, 9, 8], [1, 2, 6, 5],
                    [numpy_helper.from_array(np.array([1, 1, 0.7, 0.7], np.float32), "sc")]),
    "concat_rows": ([helper.make_node("Slice", ["xd", "s", "e", "a"], ["u"]),
                     helper.make_node("QuantizeLinear", ["u", "sx", "zx"], ["uq"]),
                     helper.make_node("DequantizeLinear", ["uq", "sx", "zx"], ["ud"]),
                     helper.make_node("Concat", ["xd", "ud"], ["t"], axis=2)],
                    [1, 3, 4, 5], [1, 3, 6, 5], [_ints("s", [1]), _ints("e", [3]),
                                                 _ints("a", [2])]),
}


@pytest.mark.parametrize("requantize", [False, True], ids=["same", "requantized"])
@pytest.mark.parametrize("name", sorted(LONE_OPS))
def test_lone_layout_op_is_a_gather_equal_to_the_reference(
        name: str, requantize: bool, tmp_path: Path) -> None:
    """One QDQ layout op on every input code: the program (a gather; with a rescale first
    when the result is quantized differently) equals the reference, and the reference is
    within one quantum of onnxruntime."""
    nodes, shape, out_shape, consts = LONE_OPS[name]
    scales, zps = ((0.05, 0.07), (3, -9)) if requantize else ((0.05, 0.05), (3, 3))
    path = tmp_path / "m.onnx"
    onnx.save(_qdq(nodes, shape, out_shape, consts, scales, zps), path)
    codes = np.arange(int(np.prod(shape))) % 256 - 128
    x = ((codes - 3) * 0.05).astype(np.float32).reshape(shape)
    got = cimc.run_reference(cimc.api.prepare(path), {"input": x})["output"]
    expected = ExactOracle(path).run({"input": x})[0]
    assert np.abs(got - expected).max() <= scales[1] * 1.0001
    program = cimc.compile(path, "isaac")
    kinds = {op.kind for op in program.module.ops()}
    assert "gather" in kinds and ("rescale" in kinds) == requantize
    _simulate(program, tmp_path, x)


def test_squeeze_keeps_the_bytes_in_place(tmp_path: Path) -> None:
    """A conv's [1,6,1,1] result, a transpose of its unit axes and a squeeze to [1,6] leave
    the NHWC bytes, rows, pixels and channels where they are: a view, no data movement."""
    nodes = [helper.make_node("DequantizeLinear", ["wq", "sx"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "sx", "zx"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "sx", "zx"], ["cd"]),
             helper.make_node("Transpose", ["cd"], ["u"], perm=[0, 1, 3, 2]),
             helper.make_node("Squeeze", ["u", "ax"], ["t"])]
    weights = numpy_helper.from_array(np.arange(-12, 12, dtype=np.int8).reshape(6, 1, 2, 2),
                                      "wq")
    path = tmp_path / "m.onnx"
    onnx.save(_qdq(nodes, [1, 1, 2, 2], [1, 6], [_ints("ax", [2, 3]), weights]), path)
    program = cimc.compile(path, "isaac")
    kinds = [op.kind for op in program.module.ops()]
    assert "gather" not in kinds and "view" in kinds
    x = np.random.default_rng(2).standard_normal((2, 1, 2, 2)).astype(np.float32)
    inputs, expected = reference_codes(program.integer, {"input": x})
    program.save(tmp_path / "p.s")
    outputs, _ = run_program(assemble_file(tmp_path / "p.s"), load_image(tmp_path / "p.img"),
                             program.target, inputs)
    np.testing.assert_array_equal(outputs["output"], expected["output"])


def test_interpolating_resize_runs_on_the_reference_and_is_refused_on_the_chip(
        tmp_path: Path) -> None:
    """Bilinear results with align_corners weights (k / 7 here) are not exact in
    integers: the reference runs a float Resize (onnx's own), the chip refuses it naming
    the op (the half_pixel one is a conv: tests/test_resize.py)."""
    nodes = [helper.make_node("Resize", ["xd", "", "sc"], ["r"], name="up", mode="linear",
                              coordinate_transformation_mode="align_corners"),
             helper.make_node("QuantizeLinear", ["r", "sx", "zx"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "sx", "zx"], ["rd"]),
             helper.make_node("DequantizeLinear", ["wq", "sx"], ["wd"]),
             helper.make_node("Conv", ["rd", "wd"], ["t"], name="conv")]
    path = tmp_path / "m.onnx"
    weights = numpy_helper.from_array(np.arange(-4, 4, dtype=np.int8).reshape(2, 2, 2, 1), "wq")
    onnx.save(_qdq(nodes, [1, 2, 4, 4], [1, 2, 7, 8],
                   [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc"),
                    weights]), path)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    got = cimc.run_reference(cimc.api.prepare(path), {"input": x})["output"]
    expected = ExactOracle(path).run({"input": x})[0]
    assert np.abs(got - expected).max() <= 0.05 * 1.0001
    with pytest.raises(CimcError, match="op 'up' \\(resize\\) computes in float"):
        cimc.compile(path, "isaac")


def test_unknown_modes_are_refused_in_one_message_naming_each(tmp_path: Path) -> None:
    nodes = [helper.make_node("Resize", ["xd", "", "sc"], ["u"], name="up", mode="area"),
             helper.make_node("Pad", ["u", "p"], ["t"], name="pad", mode="mirror")]
    path = tmp_path / "m.onnx"
    onnx.save(_qdq(nodes, [1, 2, 4, 4], [1, 2, 8, 10],
                   [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc"),
                    _ints("p", [0, 0, 0, 1, 0, 0, 0, 1])]), path)
    with pytest.raises(CimcError) as info:
        cimc.api.prepare(path)
    message = str(info.value)
    assert "2 node(s)" in message
    assert "node 'up': Resize (mode 'area' is not supported)" in message
    assert "node 'pad': Pad (pad mode 'mirror' is not supported)" in message


@pytest.mark.parametrize("name", sorted(movement_models.INPUT_SHAPES))
def test_timing_model_follows_the_simulator_on_gathers(name: str) -> None:
    """The timing model charges a gather's band moves, receives and vgather as the code
    generator writes them (within 0.2% of the simulated cycles on these models)."""
    program = cimc.compile(movement_models.quantized_model(name, "legacy"), "isaac")
    modelled, simulated = program.report["cycles"], program.simulated_report["cycles"]
    assert abs(modelled - simulated) <= 0.005 * simulated


def test_gather_programs_are_identical_under_any_hash_seed(tmp_path: Path) -> None:
    """Fusion, band geometry and deduplicated tables follow module order, never set or
    hash order: two compiles under different PYTHONHASHSEED give the same bytes."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    model = movement_models.quantized_model("shufflenet_block", "dynamo")
    found = []
    for seed in ("1", "2"):
        out = tmp_path / seed / "prog.s"
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(root),
                                                           os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-m", "cimc", str(model), "-o", str(out),
                               "--target", "isaac", "--place-effort", "0.2"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        found.append((out.read_bytes(), out.with_suffix(".img").read_bytes()))
    assert found[0] == found[1]
    assert b"vgather" in found[0][0]


def _random_chain(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[int]]:
    """A QDQ graph of 1-4 random layout ops (Pad of any mode, also negative, Slice with
    any step, Transpose of C, H, W, Concat with an earlier tensor on any axis, Resize
    nearest), each quantized in a scale of its own (so some requantize)."""
    shape = [1, int(rng.integers(1, 5)), int(rng.integers(2, 7)), int(rng.integers(2, 7))]
    consts = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
              helper.make_tensor("z", TensorProto.INT8, [], [3])]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q0"]),
             helper.make_node("DequantizeLinear", ["q0", "s", "z"], ["v0"])]
    values, cur, now = [("v0", list(shape))], "v0", list(shape)
    for k in range(1, int(rng.integers(2, 6))):
        op, out, nxt = rng.choice(["pad", "slice", "transpose", "concat", "resize"]), f"t{k}", None
        added = len(nodes)
        if op == "pad":
            pads = [0, 0, *rng.integers(-1, 3, 2), 0, 0, *rng.integers(-1, 3, 2)]
            nxt = [now[i] + int(pads[i]) + int(pads[i + 4]) for i in range(4)]
            mode = "reflect" if max(pads) < min(now[2:]) else str(rng.choice(["constant",
                                                                                "edge"]))
            consts.append(_ints(f"p{k}", [int(p) for p in pads]))
            nodes.append(helper.make_node("Pad", [cur, f"p{k}"], [out], mode=mode))
        elif op == "slice":
            axis, step = int(rng.integers(1, 4)), int(rng.choice([1, 2, -1, -2]))
            a, b = sorted(int(v) for v in rng.integers(0, now[axis] + 1, 2))
            start, end = (a, b) if step > 0 else (b - 1, a - 1 if a else -now[axis] - 1)
            nxt = list(now)
            nxt[axis] = len(range(now[axis])[slice(start, end, step)])
            consts += [_ints(f"s{k}", [start]), _ints(f"e{k}", [end]),
                       _ints(f"a{k}", [axis]), _ints(f"st{k}", [step])]
            nodes.append(helper.make_node("Slice", [cur, f"s{k}", f"e{k}", f"a{k}", f"st{k}"],
                                          [out]))
        elif op == "transpose":
            perm = [0, *(1 + rng.permutation(3))]
            nxt = [now[int(p)] for p in perm]
            nodes.append(helper.make_node("Transpose", [cur], [out], perm=perm))
        elif op == "concat":
            other, size = values[int(rng.integers(len(values)))]
            axis = int(rng.integers(1, 4))
            if all(size[i] == now[i] for i in range(4) if i != axis):
                nxt = list(now)
                nxt[axis] += size[axis]
                nodes.append(helper.make_node("Concat", [cur, other], [out], axis=axis))
        else:
            scales = [1.0, 1.0, float(rng.choice([0.5, 1.5, 2.0])),
                      float(rng.choice([0.75, 2.0]))]
            nxt = [*now[:2], int(now[2] * scales[2]), int(now[3] * scales[3])]
            consts.append(numpy_helper.from_array(np.array(scales, np.float32), f"sc{k}"))
            nodes.append(helper.make_node(
                "Resize", [cur, "", f"sc{k}"], [out], mode="nearest",
                nearest_mode=str(rng.choice(["floor", "round_prefer_ceil"])),
                coordinate_transformation_mode=str(rng.choice(["asymmetric", "half_pixel"]))))
        if nxt is None or min(nxt) < 1:
            del nodes[added:]  # (its constants stay, unused)
            continue
        consts.append(numpy_helper.from_array(np.array(rng.choice([0.05, 0.07]), np.float32),
                                              f"qs{k}"))
        nodes += [helper.make_node("QuantizeLinear", [out, f"qs{k}", "z"], [f"q{k}"]),
                  helper.make_node("DequantizeLinear", [f"q{k}", f"qs{k}", "z"], [f"v{k}"])]
        cur, now = f"v{k}", nxt
        values.append((cur, list(now)))
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, now)], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), shape


@pytest.mark.parametrize("seed", range(24))
def test_random_layout_chains_equal_the_reference(seed: int, tmp_path: Path) -> None:
    """Fused chains, several sources, fills and requantizations together."""
    rng = np.random.default_rng(seed)
    model, shape = _random_chain(rng)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = rng.standard_normal((2, *shape[1:])).astype(np.float32)
    program = cimc.compile(path, "isaac")
    prog = tmp_path / "p.s"
    program.save(prog)
    inputs, expected = reference_codes(program.integer, {program.integer.inputs[0]: x})
    outputs, _ = run_program(assemble_file(prog), load_image(prog.with_suffix(".img")),
                             program.target, inputs)
    np.testing.assert_array_equal(outputs["output"], expected["output"])
    reference = cimc.run_reference(program.integer, {"input": x})["output"]
    assert np.abs(reference - ExactOracle(path).run_samples(x)).max() <= 0.07 * 1.0001


def test_layout_ops_that_move_nothing_leave_no_chip_op(tmp_path: Path) -> None:
    """An identity transpose: canonicalize drops it and the program has no chip op (the
    partition of an empty chip program no longer fails)."""
    nodes = [helper.make_node("Transpose", ["xd"], ["t"], perm=[0, 1, 2, 3])]
    path = tmp_path / "m.onnx"
    onnx.save(_qdq(nodes, [1, 2, 3, 3], [1, 2, 3, 3], []), path)
    program = cimc.compile(path, "isaac")
    assert [op.kind for op in program.module.ops()] == ["quantize", "dequantize"]
    x = np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(program.simulate(x).outputs["output"],
                                  cimc.run_reference(program.integer, {"input": x})["output"])
