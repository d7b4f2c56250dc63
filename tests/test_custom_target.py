"""A program compiled for a target file names that file in `.target` (relative to
the program), so `cimc sim prog.s` runs it without --target, from any working
directory, and after `cimc asm`/`disasm` into another directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_outputs import small_float_model

from cimc.cli import main
from cimc.isa.assembler import assemble_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """chip/chip.toml (the tiny target, renamed 'isaac' and clocked at 123 MHz) and
    build/prog.s compiled for it; the working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chip").mkdir()
    text = (ROOT / "targets" / "tiny.toml").read_text()
    # The name of a bundled target: the file, not the bundled isaac, must be simulated.
    text = text.replace('name = "tiny"', 'name = "isaac"').replace("clock_mhz = 100",
                                                                   "clock_mhz = 123")
    (tmp_path / "chip" / "chip.toml").write_text(text)
    small_float_model(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).uniform(-1, 1, (4, 16))
            .astype(np.float32))
    assert main(["m.onnx", "-o", "build/prog.s", "--target", "chip/chip.toml"]) == 0
    return tmp_path


def test_program_names_its_target_file_relative_to_itself(compiled: Path) -> None:
    assert assemble_file(compiled / "build" / "prog.s").target == "../chip/chip.toml"


def test_sim_runs_a_program_for_a_target_file_without_flags(
        compiled: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    x = str(compiled / "x.npy")
    assert main(["sim", "build/prog.s", "--inputs", x, "--outputs", "given.npy", "--target",
                 "chip/chip.toml"]) == 0
    capsys.readouterr()
    (compiled / "elsewhere").mkdir()
    monkeypatch.chdir(compiled / "elsewhere")  # the path is the program's, not the cwd's
    assert main(["sim", "../build/prog.s", "--inputs", x, "--outputs", "y.npy"]) == 0
    assert "at 123 MHz" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load("y.npy"), np.load(compiled / "given.npy"))


def test_asm_and_disasm_into_another_directory_keep_the_target_and_image(
        compiled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asm", "build/prog.s", "-o", "bin/deep/prog.bin"]) == 0
    assert main(["disasm", "bin/deep/prog.bin", "-o", "text/prog.s"]) == 0
    program = assemble_file(compiled / "text" / "prog.s")
    assert (program.target, program.image) == ("../chip/chip.toml", "../build/prog.img")
    for prog in ("bin/deep/prog.bin", "text/prog.s"):
        assert main(["sim", prog, "--inputs", "x.npy"]) == 0
        assert "at 123 MHz" in capsys.readouterr().out


def test_a_moved_target_file_is_a_clear_error(compiled: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    os.rename(compiled / "chip", compiled / "gone")
    assert main(["sim", "build/prog.s", "--inputs", "x.npy", "--outputs", "y.npy"]) == 1
    err = capsys.readouterr().err
    assert "chip/chip.toml" in err and "build/prog.s" in err and "--target" in err, err
    assert not (compiled / "y.npy").exists()
    assert main(["sim", "build/prog.s", "--inputs", "x.npy", "--target", "gone/chip.toml"]) == 0


def test_a_bundled_target_is_named_by_its_name(compiled: Path) -> None:
    assert main(["m.onnx", "-o", "b/prog.s", "--target", "tiny"]) == 0
    assert assemble_file(compiled / "b" / "prog.s").target == "tiny"
