"""Models larger than the chip run in phases (passes/partition.py, cimc/dialect/phased.py,
cimc.codegen.generate.generate_phases): compiled for a target too small for them, the
program reprograms the crossbars phase by phase, spills what crosses a phase to global
memory (a slot per image of the batch) and simulates bit-exact with the reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import backend_models
import models
import numpy as np
import pytest

import cimc
from cimc.api import program_report
from cimc.codegen.generate import Generated
from cimc.host.ports import reference_codes
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image
from cimc.isa.simulator import run_float, run_program
from cimc.reference.oracle import ExactOracle


def run_phased(model: Path, target: str, tmp_path: Path, x: np.ndarray, batch: int = 1,
               partition: str = "optimal") -> tuple[cimc.Program, dict]:
    """Compile in phases, simulate `x`, assert the outputs equal the reference; the report."""
    prog = tmp_path / "prog.s"
    compiled = cimc.compile(model, target, batch=batch, partition=partition)
    compiled.save(prog)
    generated = compiled.module.analysis(Generated)
    assert generated is not None and len(generated.phases) > 1
    name = compiled.integer.inputs[0]
    inputs, expected = reference_codes(compiled.integer, {name: x})
    outputs, report = run_program(assemble_file(prog), load_image(prog.with_suffix(".img")),
                                  compiled.target, inputs)
    for port, codes in expected.items():
        np.testing.assert_array_equal(outputs[port], codes, err_msg=f"{model.name} on {target}")
    return compiled, report


@pytest.mark.parametrize("name", ["mnist_cnn", "residual", "mlp", "lenet5"])
@pytest.mark.parametrize("batch", [1, 3])
def test_models_larger_than_tiny_run_in_phases_bit_exact(name: str, batch: int,
                                                         tmp_path: Path) -> None:
    """`residual` spills a skip connection across phases; mnist_cnn's and lenet5's gemms
    are larger than the chip and split by output channels."""
    x = models.sample_inputs(name, 2, seed=5)
    compiled, report = run_phased(models.quantized_model(name), "tiny", tmp_path, x, batch)
    text = (tmp_path / "prog.s").read_text()
    phases = len(compiled.module.analysis(Generated).phases)  # type: ignore[union-attr]
    assert text.count("wprog ") >= phases and "sync" in text
    assert load_image(tmp_path / "prog.img").phases == phases
    assert report["programmed_bytes"] > 0


def test_a_split_layer_is_pieces_joined_by_a_concat(tmp_path: Path) -> None:
    compiled, _ = run_phased(models.quantized_model("mnist_cnn"), "tiny", tmp_path,
                             models.sample_inputs("mnist_cnn", 1, seed=1))
    parts = [op for op in compiled.module.ops() if op.name.startswith("/fc/Gemm.part")]
    join = compiled.module.op("/fc/Gemm.join")
    assert len(parts) > 1 and join.kind == "join"
    assert join.inputs == [op.outputs[0] for op in parts]
    assert [op.attrs["phase"] for op in parts] == sorted({op.attrs["phase"] for op in parts})


def test_spills_have_a_slot_per_image(tmp_path: Path) -> None:
    compiled = cimc.compile(models.quantized_model("residual"), "tiny", batch=4)
    spilled = [op for op in compiled.module.ops() if "image_stride" in op.attrs]
    assert spilled
    for op in spilled:
        assert op.attrs["image_stride"] >= compiled.module.values[op.outputs[0]].size


def test_greedy_and_optimal_both_run_and_the_optimal_is_not_slower(tmp_path: Path) -> None:
    x = models.sample_inputs("lenet5", 1, seed=2)
    cycles = {}
    for method in ("greedy", "optimal"):
        (tmp_path / method).mkdir()
        _, report = run_phased(models.quantized_model("lenet5"), "tiny", tmp_path / method, x,
                               4, method)
        cycles[method] = report["cycles"]
    assert cycles["optimal"] <= cycles["greedy"]


def test_a_batch_amortizes_the_reprogramming(tmp_path: Path) -> None:
    """Throughput (images per cycle) at batch 8 beats batch 1: each phase's crossbars are
    programmed once for all its images."""
    x = models.sample_inputs("mnist_cnn", 1, seed=3)
    per_image = {}
    for batch in (1, 8):
        (tmp_path / str(batch)).mkdir()
        _, report = run_phased(models.quantized_model("mnist_cnn"), "tiny",
                               tmp_path / str(batch), x, batch)
        per_image[batch] = report["cycles"] / batch
    assert per_image[8] < per_image[1]


def test_phased_programs_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    model = models.quantized_model("residual")
    texts = set()
    for seed in ("1", "2"):
        out = tmp_path / seed / "prog.s"
        out.parent.mkdir()
        subprocess.run([sys.executable, "-m", "cimc", "compile", str(model), "-o", str(out),
                        "--target", "tiny", "--batch", "2", "-q"], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        texts.add(out.read_text())
    assert len(texts) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", pytest.param("vgg11", marks=pytest.mark.heavy)])
def test_cifar_cnns_run_in_phases_on_edge(name: str, tmp_path: Path) -> None:
    """Issue 12's models: larger than the edge chip's one array, compiled in phases,
    bit-exact with the reference, the same top-1 class as the exact oracle and within two
    quanta of it (ResNet-18's random weights carry the reference's rounding through 20
    layers: 2 quanta, in one phase on isaac as in 13 on edge)."""
    model = backend_models.quantized_model(name)
    x = backend_models.sample_inputs(name, 1, seed=6)
    compiled, _ = run_phased(model, "edge", tmp_path, x)
    program = assemble_file(tmp_path / "prog.s")
    got, _ = run_float(program, load_image(tmp_path / "prog.img"), compiled.target,
                       {program.inputs[0].name: x.transpose(0, 2, 3, 1)})
    want = ExactOracle(model).run_samples(x)
    output = program.outputs[0]
    assert np.abs(got[output.name] - want).max() <= 2 * output.scale * 1.001
    assert (got[output.name].argmax(1) == want.argmax(1)).all()


def test_the_report_gives_each_phase_and_its_totals(tmp_path: Path) -> None:
    """Modelled per phase (its code's timing model and its wprogs) within 2% of the
    simulated run; the phases' figures add up to the totals."""
    compiled = cimc.compile(models.quantized_model("residual"), "tiny", batch=2)
    modelled = program_report(compiled)
    simulated = program_report(compiled, simulate=True)
    phases = modelled["phases"]
    assert modelled["phase_count"] == len(phases) > 1 and modelled["batch"] == 2
    assert sum(p["cycles"] for p in phases) == modelled["cycles"]
    assert sum(p["programmed_bytes"] for p in phases) == modelled["programmed_bytes"] \
        == simulated["programmed_bytes"]
    assert [layer["phase"] for layer in modelled["layers"]] == sorted(
        layer["phase"] for layer in modelled["layers"])
    assert abs(simulated["cycles"] - modelled["cycles"]) <= 0.02 * simulated["cycles"]
    assert simulated["throughput"] == pytest.approx(
        2 * compiled.target.clock_mhz * 1e6 / simulated["cycles"])


@pytest.mark.heavy
def test_vgg16_224_runs_in_phases_on_pimcomp(tmp_path: Path) -> None:
    """138 M weights on 8,704 crossbars of 128x128 2-bit cells: four phases, the first
    classifier layer split over all of them (about 2 minutes, 3 GB)."""
    run_phased(backend_models.quantized_model("vgg16_224"), "pimcomp", tmp_path,
               backend_models.sample_inputs("vgg16_224", 1, seed=4))


def test_a_phased_program_round_trips_through_binary_and_disassembly(tmp_path: Path) -> None:
    """The phases' tables travel as .global_data: binary version 2, disassembled and
    assembled again to the same program; the simulator runs the decoded binary."""
    from cimc.isa.assembler import assemble_text
    from cimc.isa.disassembler import disassemble
    from cimc.isa.encoding import decode_program, encode_program

    compiled = cimc.compile(models.quantized_model("mnist_cnn"), "tiny", batch=2)
    compiled.save(tmp_path / "prog.s")
    program = assemble_file(tmp_path / "prog.s")
    assert program.global_data and "\n.global_data " in (tmp_path / "prog.s").read_text()
    blob = encode_program(program)
    assert int.from_bytes(blob[8:10], "little") == 2
    decoded = decode_program(blob)
    assert decoded == program
    assert assemble_text(disassemble(decoded)).global_data == program.global_data
    x = models.sample_inputs("mnist_cnn", 1, seed=8)
    inputs, expected = reference_codes(compiled.integer, {compiled.integer.inputs[0]: x})
    outputs, _ = run_program(decoded, load_image(tmp_path / "prog.img"), compiled.target,
                             inputs)
    for port, codes in expected.items():
        np.testing.assert_array_equal(outputs[port], codes)
