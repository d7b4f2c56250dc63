"""Bad input gets a clear error, seen from the command line.

Every case runs `cimc ...` on a malformed input and checks what a user sees:
exit status 1 (2 for command-line usage errors), one `cimc: ... error: ...`
message naming the file / node / line, no traceback, and no output file
(not even a partial or temporary one). The first table runs as real
subprocesses (`python -m cimc`), the second in-process through
`cimc.cli.main` for speed. Then fuzzing: the parsers of every file format
cimc reads raise CimcError or succeed on mutated input, never another
exception. Last, text output is the same whatever the hash seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from cimc.cli import main
from cimc.diagnostics import CimcError

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"
TINY = (ROOT / "targets" / "tiny.toml").read_text()

# A valid module exercising most of the text syntax (the fuzzers mutate it).
CIR = """module @m {
  input %x : f32[1,1,4,4]
  const %w : i8[2,1,3,3] q<axis=0, scale=[0.01, 0.02], zp=[0, 0]> = base64"AQIDBAUGBwgJCgsMDQ4PEBES"
  const %b : i32[2] q<axis=0, scale=[7.8125e-05, 0.00015625], zp=[0, 0]> = [12, -3]
  %xq = quantize(%x) : i8[1,1,4,4] q<scale=0.0078125, zp=0> loc("x_q")
  %y = conv(%xq, %w, %b) {strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1}
      : i8[1,2,4,4] q<scale=0.05, zp=-128>
  %r = reshape(%y) {shape=[1, 32]} : i8[1,32] q<scale=0.05, zp=-128>
  %c = clip(%r) {min=0.0, max=6} : i8[1,32] q<scale=0.05, zp=-128>
  %out = dequantize(%c) : f32[1,32]
  output %out
}
"""

# A valid program exercising the directives, labels, memory operands and branches.
ASM = """# a small program
.target tiny
.image "weights.img"
.input "x", 0, i8, [16], 0.05, 0
.output "y", 0x100, i8, [8], 0.1, -3
.core 0
.data 0x800
.word 1073741824, 31, -3, -128, 127
.byte 1, 2, 255
    li r1, 3
loop:
    ld 0(r0), 0(r0), 16
    mvm.i8 0, 64(r0), 0(r0)
    addi r1, r1, -1
    blt r0, r1, loop
    st 0x100(r0), 128(r0), 8
    halt
"""


def _save(nodes: list[onnx.NodeProto], path: Path, inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto] = ()) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)


def _value(name: str, shape: list[int | str] | None, dtype: int = TensorProto.FLOAT
           ) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _cir(body: str) -> str:
    return "module @m {\n  input %x : f32[1,4]\n" + body + "}\n"


def _make_inputs(d: Path) -> None:
    """Every malformed input of the tables below, written into `d`."""
    model = MNIST.read_bytes()
    (d / "truncated.onnx").write_bytes(model[: len(model) // 2])
    (d / "empty.onnx").write_bytes(b"")
    (d / "random.onnx").write_bytes(np.random.default_rng(0).bytes(1000))
    x, y = _value("x", [1, 4]), _value("y", [1, 4])
    _save([helper.make_node("Relu", ["nope"], ["y"])], d / "checker.onnx", [x], [y])
    _save([helper.make_node("Relu", ["x"], ["r"]),
           helper.make_node("Hardmax", ["r"], ["y"], name="hm")], d / "unsupported.onnx", [x], [y])
    _save([helper.make_node("Relu", ["x"], ["y"])], d / "dynamic.onnx",
          [_value("x", ["N", 4])], [_value("y", ["N", 4])])
    _save([helper.make_node("Relu", ["x"], ["y"])], d / "empty_dim.onnx",
          [_value("x", [0, 4])], [_value("y", [0, 4])])
    scale = numpy_helper.from_array(np.array(0.0, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    _save([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
          d / "zero_scale.onnx", [x], [y], [scale, zero])
    weights = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    external = helper.make_model(
        helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                          [weights]), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(external, d / "external.onnx", save_as_external_data=True,
              location="external.data", size_threshold=0)
    (d / "external.data").unlink()
    (d / "folder.onnx").mkdir()
    (d / "a_file").write_text("not a directory")

    cirs = {
        "syntax": "  %y = relu(%x : f32[1,4]\n  output %y\n",
        "undefined": "  %y = relu(%z) : f32[1,4]\n  output %y\n",
        "bad_type": "  %y = relu(%x) : q17[1,4]\n  output %y\n",
        "bad_attr": "  %y = relu(%x) {alpha=1} : f32[1,4]\n  output %y\n",
        "attr_type": "  %y = softmax(%x) {axis=[1]} : f32[1,4]\n  output %y\n",
        "missing_attr": "  %y = softmax(%x) : f32[1,4]\n  output %y\n",
        "bad_kind": "  %y = frobnicate(%x) : f32[1,4]\n  output %y\n",
        "redefined": "  %x = relu(%x) : f32[1,4]\n  output %x\n",
        "neg_dim": "  const %w : i8[-3] = splat(1)\n  output %w\n",
        "huge_const": "  const %w : i8[99999999999] = splat(1)\n  output %w\n",
        "zero_point": "  const %w : i8[4] q<scale=0.1, zp=999> = splat(1)\n  output %w\n",
        "neg_scale": "  const %w : i8[4] q<scale=-1, zp=0> = splat(1)\n  output %w\n",
        "range": "  const %w : i8[4] = [1, 2, 3, 999]\n  output %w\n",
        "empty_loc": '  %y = relu(%x) : f32[1,4] loc("")\n  output %y\n',
    }
    for name, body in cirs.items():
        (d / f"{name}.cir").write_text(_cir(body))
    (d / "good.cir").write_text(_cir("  %y = relu(%x) : f32[1,4]\n  output %y\n"))
    (d / "binary.cir").write_bytes(b"\xff\xfe\x00garbage")

    head = ASM.split(".core 0")[0] + ".core 0\n"
    asms = {
        "syntax": "    li r1, ,3\n",
        "undefined_label": "    jmp nowhere\n",
        "duplicate_label": "a:\na:\n    halt\n",
        "directive": ".bogus 1\n",
        "instruction": "    frob r1\n",
        "operands": "    li r1\n",
        "register": "    li r99, 1\n",
        "immediate": "    li r1, 99999999999999999999999\n",
        "memory": "    ld r1, 0(r1), 3\n",
        "word": ".data 0\n.word 1.5\n",
        "byte": ".data 0\n.byte 300\n",
        "core": ".core 0\n",
    }
    for name, body in asms.items():
        (d / f"{name}.s").write_text(head + body)
    (d / "dtype.s").write_text('.input "x", 0, f64, [4], 0.1, 0\n')

    from cimc.isa.image import Image, save_image

    (d / "prog").mkdir()
    (d / "prog" / "prog.s").write_text(ASM)
    image = Image(2, 16, 16)
    image.core(0, crossbars=4).add_group(0, np.arange(-64, 64).reshape(16, 8), 8, 2)
    save_image(image, d / "prog" / "weights.img")
    (d / "noimage").mkdir()
    (d / "noimage" / "prog.s").write_text(ASM)
    (d / "badimage").mkdir()
    (d / "badimage" / "prog.s").write_text(ASM)
    (d / "badimage" / "weights.img").write_bytes(image.to_bytes()[:100])
    (d / "random.bin").write_bytes(np.random.default_rng(1).bytes(100))
    (d / "truncated.bin").write_bytes(b"CIMCPROG\x01\x00\x80\x00\xff")

    targets = {
        "syntax": 'name = "t"\n[chip\n',
        "negative": TINY.replace("rows = 16", "rows = -16"),
        "unknown_key": TINY.replace("rows = 16", "rowz = 16"),
        "type": TINY.replace("rows = 16", 'rows = "sixteen"'),
        "missing": 'name = "t"\n',
    }
    for name, text in targets.items():
        (d / f"target_{name}.toml").write_text(text)
    # Crossbars that cannot be reprogrammed: a model larger than the chip cannot run in
    # phases.
    (d / "fixed.toml").write_text(TINY.replace('name = "tiny"', 'name = "fixed"').replace(
        "reprogrammable = true", "reprogrammable = false"))

    np.save(d / "x.npy", np.zeros((2, 1, 28, 28), np.float32))
    np.save(d / "x16.npy", np.zeros((3, 16), np.float32))
    np.save(d / "wrong_shape.npy", np.zeros((2, 3, 3), np.float32))
    np.save(d / "strings.npy", np.array(["a", "b"]))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "not_npy.npy").write_text("hello")
    np.save(d / "complex.npy", np.zeros((2, 16), np.complex64))
    np.save(d / "nan.npy", np.full((2, 16), np.nan, np.float32))
    np.save(d / "nan_image.npy", np.full((2, 1, 28, 28), np.nan, np.float32))
    np.save(d / "no_samples.npy", np.zeros((0, 16), np.float32))
    np.savez(d / "wrong_name.npz", nope=np.zeros((1, 16), np.float32))
    (d / "bad.npz").write_bytes(b"PK\x03\x04garbage")


@pytest.fixture(scope="module")
def shared_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    _make_inputs(d)
    return d


@pytest.fixture
def inputs(shared_inputs: Path, tmp_path: Path) -> Path:
    """A fresh working directory holding (links to) all the inputs: outputs land here only."""
    for entry in shared_inputs.iterdir():
        (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


@dataclass
class Case:
    """`cimc ARGS` fails with `status` and a message holding every `says` text."""

    args: list[str]
    says: list[str]
    status: int = 1
    # Files the command must not leave behind (besides any *.tmp).
    absent: list[str] = field(default_factory=lambda: ["out.s", "out.img", "out.cir",
                                                      "out.bin", "y.npy", "r.json", "d.h"])


M = str(MNIST)
COMPILE = ["-o", "out.s"]

SUBPROCESS_CASES = {
    "truncated onnx": Case(["truncated.onnx", *COMPILE], ["truncated.onnx", "not a valid ONNX"]),
    "random bytes onnx": Case(["random.onnx", *COMPILE], ["random.onnx", "not a valid ONNX"]),
    "checker": Case(["checker.onnx", *COMPILE], ["checker.onnx", "checker", "'nope'"]),
    "unsupported op": Case(["unsupported.onnx", *COMPILE], ["unsupported.onnx", "'hm'",
                                                             "Hardmax"]),
    "dynamic shape": Case(["dynamic.onnx", *COMPILE], ["dynamic.onnx", "--input-shape x="]),
    "missing external data": Case(["external.onnx", *COMPILE], ["external.onnx",
                                                                "external.data"]),
    "directory": Case(["folder.onnx", *COMPILE], ["folder.onnx", "directory"]),
    "output under a file": Case([M, "-o", "a_file/out.s"],
                                ["a_file/out.s", "cannot write", "not a directory"]),
    "too big for fixed crossbars": Case([M, *COMPILE, "--target", "fixed.toml"],
                                        ["'fixed'", "crossbars"]),
    "cir syntax": Case(["opt", "syntax.cir", "-o", "out.cir"], ["syntax.cir:3:"]),
    "bad pipeline option": Case(["opt", "good.cir", "-p", "canonicalize{bogus=1}"],
                                ["canonicalize", "bogus"]),
    "asm undefined label": Case(["asm", "undefined_label.s", "-o", "out.bin"],
                                ["undefined_label.s:7:", "nowhere"]),
    "disasm not a program": Case(["disasm", "random.bin", "-o", "out.s"], ["random.bin",
                                                                           "not a cimc program"]),
    "sim missing image": Case(["sim", "noimage/prog.s", "--inputs", "x16.npy", "--outputs",
                               "y.npy"], ["noimage/weights.img", "not found"]),
    "bad target": Case(["targets", "check", "target_negative.toml"],
                       ["target_negative.toml:", "crossbar.rows"]),
    "emit-data without inputs": Case([M, *COMPILE, "--emit-data", "d.h"], ["--emit-data",
                                                                          "--inputs"]),
    "usage: compile needs -o": Case([M], ["-o"], status=2),
    "usage: --adc-bits not a number": Case(["sim", "prog/prog.s", "--adc-bits", "many"],
                                           ["--adc-bits"], status=2),
}

IN_PROCESS_CASES = {
    "empty onnx": Case(["empty.onnx", *COMPILE], ["empty.onnx"]),
    "missing onnx": Case(["missing.onnx", *COMPILE], ["missing.onnx", "no such file"]),
    "zero-size input": Case(["opt", "empty_dim.onnx"], ["empty_dim.onnx", "size 0"]),
    "zero quantization scale": Case(["opt", "zero_scale.onnx"], ["zero_scale.onnx", "'quant'",
                                                                 "scale"]),
    "input-shape not a number": Case(["opt", "dynamic.onnx", "--input-shape", "x=1,a"],
                                     ["x=1,a"]),
    "input-shape zero": Case(["opt", "dynamic.onnx", "--input-shape", "x=0,4"], ["x=0,4"]),
    "input-shape unknown name": Case(["opt", "dynamic.onnx", "--input-shape", "y=1,4"],
                                     ["dynamic.onnx", "'y'", "inputs are: x"]),
    "input-shape wrong rank": Case(["opt", "dynamic.onnx", "--input-shape", "x=1,4,5"],
                                   ["dynamic.onnx", "3 dimensions", "has 2"]),
    "input-shape on cir": Case(["opt", "good.cir", "--input-shape", "x=1,4"], [".onnx"]),
    "opt missing file": Case(["opt", "missing.cir"], ["missing.cir"]),
    "opt directory": Case(["opt", "prog"], ["prog", "directory"]),
    "opt binary file": Case(["opt", "binary.cir"], ["binary.cir", "not a text file"]),
    "opt output under a file": Case(["opt", "good.cir", "-o", "a_file/out.cir"],
                                    ["a_file/out.cir"]),
    "pipeline unknown target": Case(["opt", "good.cir", "--target", "nonexistent", "-p", "tile"],
                                    ["nonexistent"]),
    "pipeline unbalanced": Case(["opt", "good.cir", "-p", "tile{placer=x"], ["unbalanced"]),
    "pipeline stray brace": Case(["opt", "good.cir", "-p", "canonicalize}"], ["unbalanced"]),
    "pipeline unknown pass": Case(["opt", "good.cir", "-p", "nosuchpass"], ["nosuchpass"]),
    "pipeline empty pass": Case(["opt", "good.cir", "-p", "canonicalize,,fold-qdq"], ["empty"]),
    **{f"cir {name}": Case(["opt", f"{name}.cir", "-o", "out.cir"], [f"{name}.cir:{line}:", say])
       for name, line, say in [
           ("undefined", 3, "%z"), ("bad_type", 3, "q17"), ("bad_attr", 3, "alpha"),
           ("attr_type", 3, "'axis'"), ("missing_attr", 3, "'axis'"),
           ("bad_kind", 3, "frobnicate"), ("redefined", 3, "already defined"),
           ("neg_dim", 3, "-3"), ("huge_const", 3, "bytes"), ("zero_point", 3, "999"),
           ("neg_scale", 3, "positive"), ("range", 3, "999"), ("empty_loc", 3, "empty")]},
    **{f"asm {name}": Case(["asm", f"{name}.s", "-o", "out.bin"], [f"{name}.s:{line}:", say])
       for name, line, say in [
           ("syntax", 7, "unexpected"), ("duplicate_label", 8, "duplicate label"),
           ("directive", 7, ".bogus"), ("instruction", 7, "frob"), ("operands", 7, "li"),
           ("register", 7, "r99"), ("immediate", 7, "out of range"), ("memory", 7, "memory"),
           ("word", 8, "integers"), ("byte", 8, "300"), ("core", 7, "core 0"),
           ("dtype", 1, "f64")]},
    "asm missing file": Case(["asm", "missing.s", "-o", "out.bin"], ["missing.s"]),
    "disasm truncated": Case(["disasm", "truncated.bin"], ["truncated.bin", "truncated"]),
    "disasm text": Case(["disasm", "good.cir"], ["good.cir", "not a cimc program"]),
    "sim not a program": Case(["sim", "random.bin"], ["random.bin"]),
    "sim corrupt image": Case(["sim", "badimage/prog.s", "--inputs", "x16.npy", "--outputs",
                               "y.npy"], ["badimage/weights.img", "not a valid crossbar image"]),
    "sim unknown target": Case(["sim", "prog/prog.s", "--target", "nonexistent"],
                               ["nonexistent"]),
    "sim noise nan": Case(["sim", "prog/prog.s", "--inputs", "x16.npy", "--noise", "nan"],
                          ["--noise", "finite"], status=2),
    "sim max-steps 0": Case(["sim", "prog/prog.s", "--inputs", "x16.npy", "--max-steps", "0"],
                            ["--max-steps", ">= 1"], status=2),
    "sim output type": Case(["sim", "prog/prog.s", "--inputs", "x16.npy", "--outputs", "y.txt"],
                            ["y.txt"]),
    **{f"sim inputs {name}": Case(["sim", "prog/prog.s", "--inputs", name, "--outputs",
                                   "y.npy"], [name, say])
       for name, say in [
           ("wrong_shape.npy", "shape"), ("objects.npy", "not a readable"),
           ("not_npy.npy", "not a numpy .npy"), ("complex.npy", "complex64"),
           ("nan.npy", "NaN"), ("no_samples.npy", "no samples"), ("wrong_name.npz", "'nope'"),
           ("bad.npz", "not a readable"), ("missing.npy", "no such file"),
           ("strings.npy", "shape")]},
    **{f"run inputs {name}": Case(["run", M, "--engine", "reference", "--inputs", name,
                                   "--outputs", "y.npy"], [name, say])
       for name, say in [
           ("wrong_shape.npy", "shape"), ("objects.npy", "not a readable"),
           ("not_npy.npy", "not a numpy .npy"), ("nan_image.npy", "NaN"),
           ("wrong_name.npz", "image"), ("bad.npz", "not a readable"),
           ("missing.npy", "no such file"), ("strings.npy", "shape")]},
    "run output under a file": Case(["run", M, "--engine", "reference", "--inputs", "x.npy",
                                     "--outputs", "a_file/y.npy"], ["a_file/y.npy"]),
    "compile count 0": Case([M, *COMPILE, "--inputs", "x.npy", "--count", "0"],
                            ["--count: 0"], status=2),
    "compile report under a file": Case([M, *COMPILE, "--report", "a_file/r.json"],
                                        ["a_file/r.json"]),
    "compile count 0 without inputs": Case([M, *COMPILE, "--count", "0"], ["--count"],
                                           status=2),
    "compile inputs npz": Case([M, *COMPILE, "--inputs", "wrong_name.npz"], ["wrong_name.npz"]),
    "compile inputs strings": Case([M, *COMPILE, "--inputs", "strings.npy"], ["strings.npy"]),
    "compile inputs nan": Case([M, *COMPILE, "--inputs", "nan_image.npy", "--emit-data", "d.h"],
                               ["nan_image.npy", "NaN"]),
    **{f"target {name}": Case(["targets", "show", f"target_{name}.toml"],
                              [f"target_{name}.toml", say])
       for name, say in [("syntax", "TOML syntax"), ("unknown_key", "rowz"),
                         ("type", "sixteen"), ("missing", "missing section")]},
    "target missing file": Case(["targets", "show", "nowhere.toml"], ["nowhere.toml"]),
    "target unknown name": Case([M, *COMPILE, "--target", "tinny"], ["tinny", "'tiny'"]),
}


def _check(case: Case, status: int, stderr: str, workdir: Path) -> None:
    assert status == case.status, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("cimc: " if status == 1 else "usage: cimc"), stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr  # one message (a located one quotes its line below it)
    for text in case.says:
        assert text in stderr, f"{text!r} not in {stderr!r}"
    for name in case.absent:
        assert not (workdir / name).exists(), f"{name} left behind"
    assert not list(workdir.rglob("*.tmp")), "temporary file left behind"


@pytest.mark.parametrize("case", SUBPROCESS_CASES.values(), ids=SUBPROCESS_CASES.keys())
def test_bad_input_from_the_command_line(case: Case, inputs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "cimc", *case.args], cwd=inputs, env=env,
                            capture_output=True, text=True, timeout=120)
    _check(case, result.returncode, result.stderr, inputs)


@pytest.mark.parametrize("case", IN_PROCESS_CASES.values(), ids=IN_PROCESS_CASES.keys())
def test_bad_input_in_process(case: Case, inputs: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(inputs)
    status = main(case.args)
    _check(case, status, capsys.readouterr().err, inputs)


def test_good_inputs_of_the_tables_work(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failures above are the inputs' fault: the same commands on good inputs succeed."""
    monkeypatch.chdir(inputs)
    assert main(["opt", "dynamic.onnx", "--input-shape", "x=1,4", "-o", "ok.cir"]) == 0
    assert main(["opt", "good.cir", "-p", "canonicalize"]) == 0
    assert main(["asm", "prog/prog.s", "-o", "ok.bin"]) == 0
    assert main(["disasm", "ok.bin", "-o", "ok.s"]) == 0
    assert main(["sim", "prog/prog.s", "--inputs", "x16.npy", "--outputs", "ok.npy"]) == 0
    assert np.load("ok.npy").shape == (3, 8)
    assert main(["targets", "check", "tiny"]) == 0


# Fuzzing: mutations of valid inputs parse or raise CimcError, nothing else.

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """`text` with a few characters or lines deleted, duplicated, swapped or replaced."""
    for _ in range(draw(st.integers(1, 4))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(["del", "dup", "swap", "char", "line-del", "line-dup",
                                     "line-swap"]))
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        j = draw(st.integers(0, max(len(text) - 1, 0)))
        a = draw(st.integers(0, len(lines) - 1))
        b = draw(st.integers(0, len(lines) - 1))
        if kind == "del":
            text = text[:i] + text[i + 1:]
        elif kind == "dup":
            text = text[:i] + text[i:i + 1] + text[i:]
        elif kind == "swap" and text:
            chars = list(text)
            chars[i], chars[j] = chars[j], chars[i]
            text = "".join(chars)
        elif kind == "char":
            text = text[:i] + draw(st.sampled_from(list('0-9%@[]{}(),:="\\.e+x\n '))) + text[i + 1:]
        elif kind == "line-del":
            text = "\n".join(lines[:a] + lines[a + 1:])
        elif kind == "line-dup":
            text = "\n".join(lines[:b] + [lines[a]] + lines[b:])
        else:
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@st.composite
def mutated_bytes(draw: st.DrawFn, blob: bytes) -> bytes:
    """`blob` with a few bytes deleted, replaced or inserted."""
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(["del", "set", "insert", "cut"]))
        if kind == "del":
            del data[i:i + 1]
        elif kind == "set":
            data[i:i + 1] = bytes([draw(st.integers(0, 255))])
        elif kind == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        else:
            del data[i:]
    return bytes(data)


def _parses_or_cimc_error(parse: Callable[..., object], *args: object, **kwargs: object
                          ) -> None:
    try:
        parse(*args, **kwargs)
    except CimcError:
        pass


def _program_bytes() -> bytes:
    from cimc.isa.assembler import assemble_text
    from cimc.isa.encoding import encode_program

    return encode_program(assemble_text(ASM, "prog.s"))


def _image_bytes() -> bytes:
    from cimc.isa.image import Image

    image = Image(2, 16, 16)
    image.core(0, crossbars=4).add_group(0, np.arange(-64, 64).reshape(16, 8), 8, 2)
    image.core(3, crossbars=2).add_group(1, np.arange(40).reshape(8, 5) % 16 - 8, 4, 2)
    return image.to_bytes()


def test_fuzz_bases_are_valid() -> None:
    """The fuzzers start from inputs that parse: their mutations probe the error paths."""
    from cimc.ir.text import parse_module
    from cimc.isa.assembler import assemble_text
    from cimc.isa.encoding import decode_program
    from cimc.isa.image import Image
    from cimc.targets.loader import parse_target

    parse_module(CIR, "m.cir", verify=True)
    assemble_text(ASM, "prog.s")
    decode_program(_program_bytes(), "prog.bin")
    Image.from_bytes(_image_bytes(), "w.img")
    parse_target(TINY, "tiny.toml")


@FUZZ
@given(mutated_text(CIR))
def test_fuzz_cir_parser(text: str) -> None:
    from cimc.ir.text import parse_module

    _parses_or_cimc_error(parse_module, text, "m.cir", verify=True)


@FUZZ
@given(mutated_text(ASM))
def test_fuzz_assembler(text: str) -> None:
    from cimc.isa.assembler import assemble_text

    _parses_or_cimc_error(assemble_text, text, "prog.s")


@FUZZ
@given(mutated_bytes(_program_bytes()))
def test_fuzz_program_decoder(blob: bytes) -> None:
    from cimc.isa.encoding import decode_program

    _parses_or_cimc_error(decode_program, blob, "prog.bin")


@FUZZ
@given(mutated_bytes(_image_bytes()))
def test_fuzz_image_loader(blob: bytes) -> None:
    from cimc.isa.image import Image

    _parses_or_cimc_error(Image.from_bytes, blob, "w.img")


@FUZZ
@given(mutated_text(TINY))
def test_fuzz_target_loader(text: str) -> None:
    from cimc.targets.loader import parse_target

    _parses_or_cimc_error(parse_target, text, "t.toml")


# Determinism: the printed IR does not depend on the hash seed.

def test_opt_output_is_the_same_under_any_hash_seed(tmp_path: Path) -> None:
    outputs = []
    for seed in ("0", "1"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-m", "cimc", "opt", "-p", "canonicalize,fold-qdq", str(MNIST)],
            env=env, capture_output=True, timeout=120, check=True)
        outputs.append(result.stdout)
    assert b"conv(" in outputs[0]
    assert outputs[0] == outputs[1]

