"""No lost data: every command's outputs appear all together or not at all.

An output that is an input or another output (by name, symlink or hard link)
or that cannot be written is refused before any work; a failure of a later
output, or SIGTERM in the middle of a compile, leaves no file behind (not even
a hidden staging file); a failed commit puts the old files back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.outputs import OutputSet

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"


def small_float_model(path: Path) -> Path:
    """A float MatMul + Relu, 16 -> 8: compiles for the tiny target in a second."""
    weights = np.random.default_rng(3).uniform(-1, 1, (16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=9), path)
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    small_float_model(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(-1, 1, (3, 16))
            .astype(np.float32))
    return tmp_path


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


CLASHES = {
    "compile -o the model": (["m.onnx", "-o", "m.onnx"], "-o m.onnx", "MODEL.onnx"),
    "compile --report the model": (["m.onnx", "-o", "p.s", "--report", "m.onnx"],
                                   "--report m.onnx", "MODEL.onnx"),
    "compile image beside -o is the model": (["m.img", "-o", "m.s"], "m.img", "MODEL.onnx"),
    "compile --emit-data the inputs": (["m.onnx", "-o", "p.s", "--inputs", "x.npy",
                                        "--emit-data", "x.npy"], "--emit-data x.npy",
                                       "--inputs"),
    "compile --calibrate the report": (["m.onnx", "-o", "p.s", "--calibrate", "x.npy",
                                        "--report", "x.npy"], "--report x.npy", "--calibrate"),
    "compile --report the image": (["m.onnx", "-o", "p.s", "--report", "p.img"],
                                   "--report p.img", "the image beside -o"),
    "compile --report the header": (["m.onnx", "-o", "p.s", "--inputs", "x.npy",
                                     "--emit-data", "d.h", "--report", "./d.h"],
                                    "d.h", "same file"),
    "compile -o a symlink to the model": (["m.onnx", "-o", "link.s"], "link.s", "MODEL.onnx"),
    "compile -o a hard link to the model": (["m.onnx", "-o", "hard.s"], "hard.s",
                                            "MODEL.onnx"),
    "run --outputs the inputs": (["run", "m.onnx", "--inputs", "x.npy", "--outputs", "x.npy"],
                                 "--outputs x.npy", "--inputs"),
    "run --report the model": (["run", "m.onnx", "--inputs", "x.npy", "--outputs", "y.npy",
                                "--report", "m.onnx"], "--report m.onnx", "MODEL.onnx"),
    "opt -o the input": (["opt", "m.onnx", "-o", "m.onnx"], "-o m.onnx", "FILE"),
    "opt --emit-asm the input": (["opt", "m.onnx", "--emit-asm", "m.onnx"],
                                 "--emit-asm m.onnx", "FILE"),
    "opt --emit-asm image the input": (["opt", "m.img", "--emit-asm", "m.s"],
                                       "the image beside --emit-asm m.img", "FILE"),
    "opt --emit-asm is -o": (["opt", "m.onnx", "-o", "p.s", "--emit-asm", "p.s"],
                             "--emit-asm p.s and -o p.s", "same file"),
}


@pytest.mark.parametrize(("args", "names", "says"), CLASHES.values(), ids=CLASHES.keys())
def test_an_output_naming_an_input_or_another_output_is_refused_before_any_work(
        workdir: Path, args: list[str], names: str, says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    if "m.img" in args:
        (workdir / "m.img").write_bytes((workdir / "m.onnx").read_bytes())
    (workdir / "link.s").symlink_to("m.onnx")
    os.link(workdir / "m.onnx", workdir / "hard.s")
    before = _snapshot(workdir)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert names in err and says in err and ("choose another" in err or "its own path" in err), err
    assert _snapshot(workdir) == before


def test_opt_emit_asm_writing_its_input_model_is_refused_and_the_model_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pipeline that compiles: --emit-asm wrote the program over the model it was given."""
    model = tmp_path / "m.onnx"
    model.write_bytes(MNIST.read_bytes())
    pipeline = "canonicalize,fold-qdq,lower,tile,place{placer=sequential},schedule"
    assert main(["opt", str(model), "-p", pipeline, "--emit-asm", str(model)]) == 1
    err = capsys.readouterr().err
    assert f"--emit-asm {model} is the same file as the input FILE" in err, err
    assert model.read_bytes() == MNIST.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_sim_asm_disasm_outputs_naming_inputs_are_refused(workdir: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    assert main(["m.onnx", "-o", "p/prog.s", "--target", "tiny"]) == 0
    assert main(["asm", "p/prog.s", "-o", "p/prog.bin"]) == 0
    before = _snapshot(workdir)
    for args in (["sim", "p/prog.s", "--inputs", "x.npy", "--outputs", "x.npy"],
                 ["sim", "p/prog.s", "--inputs", "x.npy", "--outputs", "y.npy", "--report",
                  "y.npy"],
                 ["sim", "p/prog.s", "--inputs", "x.npy", "--trace", "p/prog.img"],
                 ["asm", "p/prog.s", "-o", "p/prog.img"],
                 ["asm", "p/prog.s", "-o", "p/prog.s"],
                 ["disasm", "p/prog.bin", "-o", "p/prog.img"]):
        assert main(args) == 1, args
        assert "error:" in capsys.readouterr().err
        assert _snapshot(workdir) == before, args


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("option", ["--report", "--emit-data"])
def test_an_unwritable_output_is_refused_before_compiling(workdir: Path, option: str,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    # /proc refuses new files even to root, whom every permission check lets pass.
    assert main(["m.onnx", "-o", "prog.s", "--inputs", "x.npy", option, "/proc/out"]) == 1
    assert "/proc/out" in capsys.readouterr().err
    assert sorted(os.listdir(workdir)) == ["m.onnx", "x.npy"]


def test_program_named_img_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["m.onnx", "-o", "same.img"]) == 1
    assert "name the program .s" in capsys.readouterr().err
    assert sorted(os.listdir(workdir)) == ["m.onnx", "x.npy"]


def test_a_failing_later_output_leaves_nothing(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from cimc.cli import compile as compile_command

    def broken(*args: object) -> dict[str, object]:
        raise CimcError("error: the report failed")

    monkeypatch.setattr(compile_command, "build_report", broken)
    assert main(["m.onnx", "-o", "prog.s", "--target", "tiny", "--inputs", "x.npy",
                 "--emit-data", "d.h", "--report", "r.json"]) == 1
    assert "the report failed" in capsys.readouterr().err
    assert sorted(os.listdir(workdir)) == ["m.onnx", "x.npy"]  # nor any hidden file


def test_a_failed_write_removes_staged_files_and_the_directories_made_for_them(
        tmp_path: Path) -> None:
    program, report = tmp_path / "out" / "deep" / "prog.s", tmp_path / "sub" / "r.json"
    with OutputSet({"-o": program, "--report": report}) as out:
        out.write(program, "program")
        (tmp_path / "sub").write_text("in the way")  # the next write fails
        with pytest.raises(CimcError, match="r.json"):
            out.write(report, "{}")
    assert sorted(os.listdir(tmp_path)) == ["sub"]


def test_all_outputs_appear_together(workdir: Path) -> None:
    assert main(["m.onnx", "-o", "out/prog.s", "--target", "tiny", "--inputs", "x.npy",
                 "--emit-data", "out/d.h", "--report", "out/r.json"]) == 0
    assert sorted(os.listdir(workdir / "out")) == ["d.h", "prog.img", "prog.s", "r.json"]


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_failed_commit_restores_the_old_files(
        hard_links: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old a")

    def no_links(source: object, target: object) -> None:
        raise OSError(1, "Operation not permitted")  # as on file systems without hard links

    if not hard_links:
        monkeypatch.setattr(os, "link", no_links)
    with OutputSet({"a": first, "b": second}) as out:
        out.write(first, "new a")
        out.write(second, "new b")
        second.mkdir()  # something gets in the way of the second rename
        with pytest.raises(CimcError, match="b.txt"):
            out.commit()
    assert first.read_text() == "old a"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]


def test_sigterm_during_a_compile_leaves_no_output(tmp_path: Path) -> None:
    import backend_models

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A model whose placement really searches, with a budget of minutes of work (the
    # budget grows with the model: ResNet-18 at 32x32 on pimcomp, 707 units, places
    # in about a second at effort 1; MNIST on tiny at effort 100 in half a second),
    # so the signal lands mid-compile on any machine.
    model = backend_models.quantized_model("resnet18")
    process = subprocess.Popen(
        [sys.executable, "-m", "cimc", str(model), "-o", str(tmp_path / "prog.s"), "--report",
         str(tmp_path / "r.json"), "--target", "pimcomp", "--place-effort", "100"],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no program, no image, no staging file


# Stages a file, then signals itself: the abort must remove the staged file.
STAGE_THEN_SIGNAL = """
import os, signal, sys, time
from pathlib import Path
from cimc.outputs import OutputSet, abort_on_signals
out = Path(sys.argv[1])
if sys.argv[3] == "ignored":
    signal.signal(getattr(signal, sys.argv[2]), signal.SIG_IGN)
with abort_on_signals(), OutputSet({"-o": out}) as outputs:
    outputs.write(out, "program")
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    time.sleep(0.5)
    outputs.commit()
"""


def _stage_then_signal(tmp_path: Path, name: str, ignored: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", STAGE_THEN_SIGNAL, str(tmp_path / "prog.s"), name,
         "ignored" if ignored else "default"],
        env=env, capture_output=True, text=True, timeout=60)


def test_sigterm_after_staging_removes_the_staged_file(tmp_path: Path) -> None:
    done = _stage_then_signal(tmp_path, "SIGTERM", ignored=False)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "stopped by SIGTERM" in done.stderr
    assert os.listdir(tmp_path) == []


def test_a_signal_the_caller_ignores_stays_ignored(tmp_path: Path) -> None:
    # nohup ignores SIGHUP: a hang-up must not stop the command.
    done = _stage_then_signal(tmp_path, "SIGHUP", ignored=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "prog.s").read_text() == "program"
