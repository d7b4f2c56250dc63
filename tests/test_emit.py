"""What `cimc MODEL.onnx -o prog.s` writes: a program that assembles and
disassembles back, a data header that compiles with the system C compiler,
a report whose figures agree with the simulator, and the same bytes on every
run whatever the hash seed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import models
import numpy as np
import pytest

from cimc.cli import main
from cimc.isa.assembler import assemble_file, assemble_text
from cimc.isa.disassembler import disassemble
from cimc.isa.encoding import encode_program

REPORT_KEYS = {"target", "crossbars_used", "crossbars_available", "cores_used", "utilization",
               "hop_bytes", "cycles", "throughput", "energy_nj", "instructions",
               "program_bytes", "pass_seconds", "figures_from"}


@pytest.fixture(scope="module")
def model() -> Path:
    return models.quantized_model("mnist_cnn", activations="uint8")


def test_program_assembles_and_disassembles_back(model: Path, tmp_path: Path) -> None:
    prog = tmp_path / "prog.s"
    assert main([str(model), "-o", str(prog), "--target", "isaac"]) == 0
    program = assemble_file(prog)
    again = assemble_text(disassemble(program), "disassembled.s")
    assert encode_program(again) == encode_program(program)
    assert program.image == "prog.img" and (tmp_path / "prog.img").is_file()


@pytest.mark.parametrize(("name", "target", "pipeline"), [
    ("mnist_cnn", "isaac", "latency"), ("residual", "isaac", "throughput"),
    ("separable", "tiny", "latency")])
def test_in_memory_program_is_the_assembled_text(name: str, target: str,
                                                 pipeline: str) -> None:
    """What the simulator runs within a command (built from the generated code) is what
    assembling the written program gives."""
    import cimc

    program = cimc.compile(models.quantized_model(name), target, pipeline=pipeline,
                           path="out/prog.s")
    assembled = assemble_text(program.assembly, program.path)
    assert program.isa_program == assembled
    assert encode_program(program.isa_program) == encode_program(assembled)
    assert program.report["program_bytes"] == len(encode_program(assembled))


def test_data_header_compiles_and_holds_reference_outputs(model: Path, tmp_path: Path) -> None:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no system C compiler (cc)")
    x = models.sample_inputs("mnist_cnn", 5, seed=4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(5, dtype=np.int64))
    header = tmp_path / "mnist_data.h"
    status = main([str(model), "-o", str(tmp_path / "prog.s"), "--emit-data", str(header),
                   "--inputs", str(tmp_path / "x.npy"), "--count", "3",
                   "--labels", str(tmp_path / "y.npy"), "--data-name", "mnist"])
    assert status == 0
    text = header.read_text()
    assert "#define MNIST_CNT 3" in text
    assert "#define MNIST_INPUT_SIZE 784" in text and "#define MNIST_OUTPUT_SIZE 10" in text
    assert "static const uint8_t mnist_input[MNIST_CNT][MNIST_INPUT_SIZE]" in text
    assert "static const uint8_t mnist_output[MNIST_CNT][MNIST_OUTPUT_SIZE]" in text
    assert "static const int32_t mnist_label[MNIST_CNT] = {0, 1, 2};" in text
    source = tmp_path / "use.c"
    source.write_text('#include "mnist_data.h"\n'
                      "_Static_assert(sizeof mnist_input[0] == MNIST_INPUT_SIZE, \"size\");\n"
                      "int first_output(int i) { return mnist_output[i][0] + mnist_label[i]"
                      " + mnist_input[i][0]; }\n"
                      "float logit(int i) { return MNIST_OUTPUT_SCALE * (mnist_output[i][0]"
                      " - MNIST_OUTPUT_ZERO_POINT); }\n"
                      "float pixel(int i) { return MNIST_INPUT_SCALE * (mnist_input[i][0]"
                      " - MNIST_INPUT_ZERO_POINT); }\n")
    subprocess.run([cc, "-c", "-Wall", "-Werror", "-I", str(tmp_path), str(source), "-o",
                    str(tmp_path / "use.o")], check=True)
    from cimc.frontend.importer import import_onnx
    from cimc.host.ports import reference_codes
    from cimc.pass_manager import parse_pipeline, run_pipeline
    from cimc.pipeline import FRONTEND

    integer = import_onnx(str(model))
    run_pipeline(integer, parse_pipeline(",".join(FRONTEND)))
    _, outputs = reference_codes(integer, {"input": x[:3]})
    first = text.split("mnist_output[MNIST_CNT][MNIST_OUTPUT_SIZE] = {")[1].split("}")[0]
    assert [int(v) for v in first.strip(" \n{").split(",")] == outputs["logits"][0].tolist()
    defines = dict(line.split()[1:3] for line in text.splitlines()
                   if line.startswith("#define MNIST_") and len(line.split()) > 2)
    from cimc.dialect.host import ports

    (program_input,), (program_output,) = ports(integer)
    for port, value in (("INPUT", program_input.value), ("OUTPUT", program_output.value)):
        q = integer.values[value].quant
        assert q is not None
        assert np.float32(defines[f"MNIST_{port}_SCALE"].rstrip("f")) == np.float32(q.scale[0])
        assert int(defines[f"MNIST_{port}_ZERO_POINT"]) == int(q.zero_point[0])


def test_report_figures_come_from_the_timing_model(model: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    assert main([str(model), "-o", str(tmp_path / "prog.s"), "--target", "pimcomp",
                 "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["figures_from"].startswith("timing model")
    assert "instructions_executed" not in report  # only a simulation counts them
    simulated = tmp_path / "s.json"
    assert main([str(model), "-o", str(tmp_path / "prog.s"), "--target", "pimcomp",
                 "--report", str(simulated), "--simulate"]) == 0
    exact = json.loads(simulated.read_text())
    for key in ("instructions", "program_bytes", "hop_bytes", "crossbars_used"):
        assert report[key] == exact[key], key
    for key in ("cycles", "throughput", "energy_nj"):
        assert abs(report[key] / exact[key] - 1) < 0.05, key


def test_report_figures(model: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", models.sample_inputs("mnist_cnn", 2, seed=1))
    report_path = tmp_path / "r.json"
    assert main([str(model), "-o", str(tmp_path / "prog.s"), "--target", "pimcomp",
                 "--inputs", str(tmp_path / "x.npy"), "--report", str(report_path),
                 "--simulate"]) == 0
    report = json.loads(report_path.read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["target"] == "pimcomp"
    assert report["crossbars_available"] == 136 * 64
    assert 0 < report["crossbars_used"] <= report["crossbars_available"]
    assert 0.0 < report["utilization"] <= 1.0
    assert report["hop_bytes"] == report["simulated_hop_bytes"]
    assert report["cycles"] > 0 and report["energy_nj"] > 0
    assert report["figures_from"].startswith("simulation of one inference on the first")
    assert {"lower", "tile", "place", "schedule", "emit"} <= report["pass_seconds"].keys()


def test_report_without_inputs_says_where_figures_come_from(model: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    assert main([str(model), "-o", str(tmp_path / "prog.s"), "--report", str(report_path),
                 "--simulate"]) == 0
    assert "zero-point input" in json.loads(report_path.read_text())["figures_from"]


def test_compiles_are_byte_identical_under_different_hash_seeds(tmp_path: Path) -> None:
    model = models.quantized_model("mlp")  # spread over two isaac cores
    digests = []
    for seed in ("0", "12345"):
        out = tmp_path / seed
        out.mkdir()
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-m", "cimc", str(model), "-o", str(out / "prog.s"),
                        "--target", "isaac"], check=True, env=env)
        digests.append([hashlib.sha256((out / name).read_bytes()).hexdigest()
                        for name in ("prog.s", "prog.img")])
    assert digests[0] == digests[1]


def test_emit_data_without_inputs_is_an_error(model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(model), "-o", str(tmp_path / "p.s"), "--emit-data",
                 str(tmp_path / "d.h")]) == 1
    assert "--emit-data needs --inputs" in capsys.readouterr().err
    assert not (tmp_path / "p.s").exists()


def test_data_header_arrays_of_ports_whose_c_names_collide_stay_distinct(tmp_path: Path) -> None:
    from cimc.emit.data_header import data_header

    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no system C compiler (cc)")
    codes = {name: np.full((2, 3), k, np.int8) for k, name in enumerate(["Y", "y", "a.b", "a_b",
                                                                         "y_1", "*/ /*"])}
    text = data_header("d", {"x": np.zeros((2, 4), np.uint8)}, codes)
    for suffix in ("_y", "_y_1", "_a_b", "_a_b_1", "_y_1_1"):
        assert f"d_output{suffix}[D_CNT]" in text
    (tmp_path / "d_data.h").write_text(text)
    source = tmp_path / "use.c"
    source.write_text('#include "d_data.h"\nint f(void) { return d_output_y_1[0][0]; }\n')
    subprocess.run([cc, "-c", "-Wall", "-Werror", "-I", str(tmp_path), str(source), "-o",
                    str(tmp_path / "use.o")], check=True)


def test_compile_time_passes_covers_the_whole_command(model: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from cimc.pipeline import BACKEND, FRONTEND

    assert main([str(model), "-o", str(tmp_path / "prog.s"), "--report",
                 str(tmp_path / "r.json"), "--time-passes"]) == 0
    table = capsys.readouterr().err.split("---Name---\n", 1)[1]
    rows = [re.fullmatch(r"\s*([\d.]+) \(\s*[\d.]+%\)  (.+)", line).groups()  # type: ignore[union-attr]
            for line in table.splitlines() if line.strip()]
    names = [name for _, name in rows]
    assert names == ["command line", "import-onnx", *FRONTEND, *BACKEND, "emit", "report",
                     "write files", "(other)", "(verify)", "Total"]
    # Called with argv (not as the program), there is no process start-up to count.
    seconds = [float(s) for s, _ in rows]
    assert sum(seconds[:-1]) == pytest.approx(seconds[-1], abs=1e-3 * len(rows))


@pytest.mark.parametrize("target", ["pimcomp", "tiny"])
def test_per_layer_figures_add_up_to_the_totals(target: str, tmp_path: Path) -> None:
    import backend_models

    import cimc

    model = (backend_models.quantized_model("mnist_tiny") if target == "tiny"
             else models.quantized_model("mnist_cnn"))
    report = cimc.compile(model, target).report
    layers = report["layers"]
    assert [layer["kind"] for layer in layers].count("matvec") >= 2
    assert sum(layer["mvms"] for layer in layers) == report["mvm_count"]
    assert sum(layer["hop_bytes_out"] for layer in layers) == report["hop_bytes"] > 0
    used = set(range(report["cores_available"]))
    assert all(set(layer["cores"]) <= used for layer in layers)
    assert len({c for layer in layers for c in layer["cores"]}) == report["cores_used"]
    assert sum(layer["crossbars"] for layer in layers) >= report["crossbars_used"]
    assert sum(layer["global_bytes_out"] for layer in layers) > 0


def test_cimc_report_prints_the_summary_and_the_layer_table(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    assert main([str(model), "-o", str(tmp_path / "prog.s"), "--report", str(path)]) == 0
    report = json.loads(path.read_text())
    capsys.readouterr()
    assert main(["report", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["target", report["target"]]
    heading = next(k for k, line in enumerate(lines) if line.startswith("layer "))
    table = lines[heading + 1:]
    assert [line.split()[0] for line in table] == [layer["name"] for layer in report["layers"]]
    assert [int(line.split()[4].replace(",", "")) for line in table] == \
        [layer["mvms"] for layer in report["layers"]]
    (tmp_path / "old.json").write_text(json.dumps({"target": "isaac"}))
    (tmp_path / "bad.json").write_text("{")
    for name, message in (("old.json", "no per-layer figures"), ("bad.json", "not a JSON"),
                          ("none.json", "cannot read report")):
        assert main(["report", str(tmp_path / name)]) == 1
        assert message in capsys.readouterr().err


def test_local_memory_overflow_names_bands_tables_and_scratch() -> None:
    """A core whose bands, tables and scratch overlap is refused with what each takes;
    equal tables are placed once."""
    from cimc.codegen.generate import CoreCode, check_memory
    from cimc.diagnostics import CimcError
    from cimc.targets import load_target

    target = load_target("edge")
    code = CoreCode(0, target.local_memory_bytes)
    for _ in range(3):
        code.keep(100_000)  # three bands: 300000 bytes (aligned: 300000)
    first = code.table(np.arange(256))
    assert code.table(np.arange(256)) == first  # the same words: one copy, 1024 bytes
    code.take(4000)
    with pytest.raises(CimcError, match=r"core 0 needs 305024 bytes of local memory but "
                                        r"target 'edge' has 262144 \(300000 bytes in the bands "
                                        r"3 parts keep for the run, 1024 in constant tables, "
                                        r"4000 of scratch\)"):
        check_memory(code, target)
