"""The Python API (cimc.api): compile, simulate, save, run_reference, as docs/api.md
describes them; the examples of docs/api.md run in tests/test_docs.py."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from calls import count_calls

import cimc
from cimc.diagnostics import CimcError
from cimc.ir.text import print_module

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"


@pytest.fixture(scope="module")
def program() -> cimc.Program:
    return cimc.compile(MNIST, target="isaac", placer="sequential")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    digits = np.load(ROOT / "examples" / "mnist" / "test_digits.npz")
    return digits["images"][:3, None].astype(np.float32) / 255


def test_import_cimc_loads_no_heavy_dependency() -> None:
    code = ("import sys, cimc; heavy = [m for m in ('numpy', 'onnx', 'onnxruntime', "
            "'ortools', 'networkx') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "[]"


def test_simulated_outputs_equal_the_reference_bit_for_bit(
        program: cimc.Program, images: np.ndarray) -> None:
    run = program.simulate({"image": images})
    assert np.array_equal(run.outputs["logits"], cimc.run_reference(MNIST, images)["logits"])
    assert run.figures["batch"] == 3 and run.figures["cycles"] > 0


def test_saved_program_and_image_are_what_the_command_line_writes(
        program: cimc.Program, tmp_path: Path) -> None:
    from cimc.cli import main

    program.save(tmp_path / "api" / "prog.s")
    assert main([str(MNIST), "-o", str(tmp_path / "cli" / "prog.s"), "--placer",
                 "sequential"]) == 0
    for name in ("prog.s", "prog.img"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_a_program_saved_elsewhere_names_its_own_image(
        program: cimc.Program, tmp_path: Path) -> None:
    program.save(tmp_path / "other.s")
    assert '.image "other.img"' in (tmp_path / "other.s").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.img", "other.s"]


def test_saving_a_program_named_img_is_refused(program: cimc.Program, tmp_path: Path) -> None:
    with pytest.raises(CimcError, match="name the program .s"):
        program.save(tmp_path / "prog.img")
    assert list(tmp_path.iterdir()) == []


def test_inputs_of_the_wrong_shape_are_refused_naming_the_input(
        program: cimc.Program) -> None:
    with pytest.raises(CimcError, match=r"inputs: input 'image' has shape \[2, 28, 28\]"):
        program.simulate(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(CimcError, match="named after the model inputs \\(image\\); unknown x"):
        program.simulate({"image": np.zeros((1, 1, 28, 28), np.float32),
                          "x": np.zeros(1, np.float32)})


def test_compiling_a_prepared_module_leaves_it_unchanged(images: np.ndarray) -> None:
    integer = cimc.prepare(MNIST)
    before = print_module(integer)
    program = cimc.compile(integer, target="puma", placer="sequential")
    assert print_module(integer) == before
    assert program.target.name == "puma"
    assert np.array_equal(program.simulate(images).outputs["logits"],
                          cimc.run_reference(integer, images)["logits"])


def test_an_unknown_target_is_a_clear_error() -> None:
    with pytest.raises(CimcError, match="nosuchchip"):
        cimc.load_target("nosuchchip")


@pytest.mark.parametrize("option, message", [
    ({"replicate": 2.0}, "replicate=2.0: out of range"),
    ({"place_effort": 1000.0}, "place_effort=1000.0: out of range"),
    ({"place_time_limit": 0.0}, "place_time_limit=0.0: out of range; give a finite number > 0"),
    ({"activations": "int4"}, "activations='int4': choose 'int8' or 'uint8'"),
    ({"placer": "bogus"}, "unknown placer 'bogus'"),
])
def test_an_option_out_of_range_is_refused_naming_it(option: dict, message: str) -> None:
    with pytest.raises(CimcError, match=re.escape(message)):
        cimc.compile(MNIST, **option)


def test_a_float_model_calibrated_on_arrays_compiles_as_on_the_same_file(
        images: np.ndarray, tmp_path: Path) -> None:
    model = ROOT / "examples" / "mnist" / "mnist_cnn.onnx"
    np.save(tmp_path / "calibration.npy", images)
    from_file = cimc.compile(model, calibrate=tmp_path / "calibration.npy", placer="sequential")
    from_arrays = cimc.compile(model, calibrate={"image": images}, placer="sequential")
    assert from_arrays.assembly == from_file.assembly
    assert from_arrays.image.to_bytes() == from_file.image.to_bytes()
    with pytest.raises(CimcError, match=r"calibrate: input 'image' has shape \[28, 28\]"):
        cimc.compile(model, calibrate=images[0, 0])


def test_a_program_for_a_target_file_saved_elsewhere_names_the_file_from_there(
        tmp_path: Path, images: np.ndarray) -> None:
    from cimc.cli import main
    from cimc.isa.assembler import assemble_file

    (tmp_path / "chip").mkdir()
    chip = tmp_path / "chip" / "chip.toml"
    chip.write_text((ROOT / "targets" / "puma.toml").read_text().replace(
        'name = "puma"', 'name = "mychip"'))
    program = cimc.compile(MNIST, target=chip, placer="sequential")
    program.save(tmp_path / "build" / "prog.s")
    assert assemble_file(tmp_path / "build" / "prog.s").target == "../chip/chip.toml"
    np.save(tmp_path / "x.npy", images)
    assert main(["sim", str(tmp_path / "build" / "prog.s"), "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy")]) == 0


@pytest.mark.parametrize("pipeline", ["latency", "throughput"])
def test_a_compile_plans_and_generates_code_once(
        monkeypatch: pytest.MonkeyPatch, images: np.ndarray, pipeline: str) -> None:
    """schedule keeps the plan and code with the module; emission, the report and the
    simulation use them (in latency mode the report's bounds use the same plan)."""
    import cimc.analysis.plan
    import cimc.codegen.generate
    import cimc.emit.report  # noqa: F401  (bind its imports before counting)
    import cimc.host.run  # noqa: F401
    import cimc.passes.schedule  # noqa: F401  (loaded later, it would bind the counter)

    module = cimc.prepare(MNIST)
    generated = count_calls(cimc.codegen.generate.generate, monkeypatch.setattr)
    planned = count_calls(cimc.analysis.plan.build, monkeypatch.setattr)
    program = cimc.compile(module, "isaac", placer="sequential", pipeline=pipeline)
    assert program.report["cycles"] > 0
    program.simulate(images[:1])
    program.save(Path(tempfile.mkdtemp()) / "prog.s")
    assert len(generated) == 1
    # Throughput mode plans once more (kept too) for the bounds, those of latency mode.
    assert len(planned) == (1 if pipeline == "latency" else 2)


def test_a_copy_sharing_constants_holds_the_weights_once_and_read_only() -> None:
    """What compile keeps as the integer module: a copy of the graph, the same weights."""
    module = cimc.prepare(MNIST)
    copy = module.copy_sharing_constants()
    assert copy.constants.keys() == module.constants.keys()
    for name, data in module.constants.items():
        assert copy.constants[name] is data
        with pytest.raises(ValueError, match="read-only"):
            data[...] = 0
    copy.outputs.clear()
    copy.graph.clear()
    assert module.outputs and module.graph.number_of_nodes()  # the graph is not shared


def test_compile_leaves_the_integer_module_computing_what_prepare_gave() -> None:
    images = np.load(ROOT / "examples" / "mnist" / "test_digits.npz")["images"][:2, None] / 255
    program = cimc.compile(MNIST, target="isaac")
    want = cimc.run_reference(cimc.prepare(MNIST), images)
    got = cimc.run_reference(program.integer, images)
    np.testing.assert_array_equal(got["logits"], want["logits"])
