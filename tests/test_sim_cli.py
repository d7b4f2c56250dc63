"""`cimc sim`: program + image + inputs in, outputs, report and trace out; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cimc.cli import main
from cimc.isa.image import Image, save_image
from cimc.reference import requant

RNG = np.random.default_rng(11)
W = RNG.integers(-128, 128, size=(16, 8))
MULT, SHIFT = requant.fixed_point(np.full(8, 0.01))

PROGRAM = """
.target tiny
.image "weights.img"
.input x, 0, i8, [16], 0.05, 0
.output y, 0x100, i8, [8], 0.1, -3
.core 0
.data 0x800
""" + "\n".join(f".word {MULT[i]}, {SHIFT[i]}, -3, -128, 127" for i in range(8)) + """
    ld 0(r0), 0(r0), 16
    mvm.i8 0, 64(r0), 0(r0)
    requant.i8 128(r0), 64(r0), 8, 0x800(r0)
    st 0x100(r0), 128(r0), 8
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "prog.s").write_text(PROGRAM)
    image = Image(2, 16, 16)
    image.core(0, crossbars=4).add_group(0, W, 8, 2)
    save_image(image, tmp_path / "weights.img")
    return tmp_path


def _expected(codes: np.ndarray) -> np.ndarray:
    acc = codes.astype(np.int64) @ W
    return requant.saturate(requant.apply(acc, MULT, SHIFT) - 3, np.int8)


def test_sim_writes_dequantized_outputs_report_and_trace(workdir: Path) -> None:
    x = RNG.uniform(-6, 6, size=(40, 16)).astype(np.float32)
    np.save(workdir / "x.npy", x)
    status = main(["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npy"),
                   "--outputs", str(workdir / "y.npy"), "--report", str(workdir / "r.json"),
                   "--trace", str(workdir / "t.json")])
    assert status == 0
    codes = np.clip(np.rint(x / 0.05), -128, 127).astype(np.int8)
    y = np.load(workdir / "y.npy")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, 0.1 * (_expected(codes).astype(np.float32) + 3), rtol=1e-6)
    report = json.loads((workdir / "r.json").read_text())
    assert report["batch"] == 40 and report["mvm_instructions"] == 1
    trace = json.loads((workdir / "t.json").read_text())
    assert any(e.get("name") == "mvm.i8" for e in trace["traceEvents"])


def test_integer_inputs_are_codes_and_codes_flag_writes_codes(workdir: Path) -> None:
    codes = RNG.integers(-128, 128, size=(7, 16)).astype(np.int8)
    np.savez(workdir / "x.npz", x=codes)
    out = workdir / "y.npz"
    assert main(["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npz"),
                 "--outputs", str(out), "--codes"]) == 0
    np.testing.assert_array_equal(np.load(out)["y"], _expected(codes))
    first = out.read_bytes()
    main(["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npz"),
          "--outputs", str(out), "--codes"])
    assert out.read_bytes() == first  # deterministic .npz


def test_adc_what_if_changes_results(workdir: Path) -> None:
    codes = RNG.integers(-128, 128, size=(50, 16)).astype(np.int8)
    np.save(workdir / "x.npy", codes)
    args = ["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npy"), "--codes"]
    assert main([*args, "--outputs", str(workdir / "a.npy"), "--adc-bits", "2"]) == 0
    assert main([*args, "--outputs", str(workdir / "b.npy"), "--noise", "0.3",
                 "--seed", "4"]) == 0
    assert not np.array_equal(np.load(workdir / "a.npy"), _expected(codes))
    assert not np.array_equal(np.load(workdir / "b.npy"), _expected(codes))


def test_missing_image_is_a_clear_error(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "weights.img").unlink()
    np.save(workdir / "x.npy", np.zeros((1, 16), dtype=np.int8))
    status = main(["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npy"),
                   "--outputs", str(workdir / "y.npy")])
    assert status == 1
    assert "weights.img" in capsys.readouterr().err
    assert not (workdir / "y.npy").exists()


def test_input_shape_mismatch_is_a_clear_error(workdir: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    np.save(workdir / "x.npy", np.zeros((3, 15), dtype=np.float32))
    status = main(["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npy"),
                   "--outputs", str(workdir / "y.npy")])
    assert status == 1
    err = capsys.readouterr().err
    assert "input 'x' has shape [3, 15]" in err and "[batch, 16]" in err
    assert not (workdir / "y.npy").exists()


def test_unknown_input_name_in_npz_is_a_clear_error(workdir: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    np.savez(workdir / "x.npz", image=np.zeros((1, 16), dtype=np.int8))
    assert main(["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npz")]) == 1
    assert "array 'image' is not an input" in capsys.readouterr().err


def test_binary_program_finds_its_image_next_to_it(workdir: Path) -> None:
    assert main(["asm", str(workdir / "prog.s"), "-o", str(workdir / "prog.bin")]) == 0
    codes = RNG.integers(-128, 128, size=(5, 16)).astype(np.int8)
    np.save(workdir / "x.npy", codes)
    assert main(["sim", str(workdir / "prog.bin"), "--inputs", str(workdir / "x.npy"),
                 "--outputs", str(workdir / "y.npy"), "--codes"]) == 0
    np.testing.assert_array_equal(np.load(workdir / "y.npy"), _expected(codes))


def test_inputs_may_omit_size_one_axes(workdir: Path) -> None:
    source = (workdir / "prog.s").read_text().replace("[16]", "[4, 4, 1]")
    (workdir / "prog.s").write_text(source)
    codes = RNG.integers(-128, 128, size=(3, 4, 4)).astype(np.int8)
    np.save(workdir / "x.npy", codes)
    assert main(["sim", str(workdir / "prog.s"), "--inputs", str(workdir / "x.npy"),
                 "--outputs", str(workdir / "y.npy"), "--codes"]) == 0
    np.testing.assert_array_equal(np.load(workdir / "y.npy"), _expected(codes.reshape(3, 16)))


def test_trace_of_an_mnist_inference_names_layers_and_draws_messages(tmp_path: Path) -> None:
    """The Chrome trace-event format: every slice has name, ph, ts, dur, pid and tid;
    every flow start has its finish with the same id and the reverse; slices are named
    after the model's layers (the program's task comments); messages are flows."""
    root = Path(__file__).resolve().parent.parent
    model = root / "examples" / "mnist" / "mnist_cnn_qdq.onnx"
    prog = tmp_path / "prog.s"
    assert main([str(model), "-o", str(prog), "--target", "pimcomp"]) == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    assert main(["sim", str(prog), "--inputs", str(tmp_path / "x.npy"), "--trace",
                 str(tmp_path / "t.json")]) == 0
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert slices and all({"name", "ph", "ts", "dur", "pid", "tid"} <= e.keys() for e in slices)
    starts = sorted(e["id"] for e in events if e["ph"] == "s")
    assert starts and starts == sorted(e["id"] for e in events if e["ph"] == "f")
    assert len(set(starts)) == len(starts)
    sends = sum(1 for line in prog.read_text().splitlines() if line.split()[:1] == ["send"])
    assert sends > 0
    import cimc

    layers = [op.name for op in cimc.compile(model, "pimcomp").module.ops()
              if op.kind in ("matvec", "pool")]
    for layer in layers:
        assert any(e["name"].startswith(layer) for e in slices), layer
