"""`cimc sweep`: accuracy over a grid of settings, serially and on Ray, on the bundled
MNIST model and digits (a few digits, a few points)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cimc
from cimc.cli import main
from cimc.sweep import COLUMNS, Grid, LabelledSet, run_sweep

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist"
MODEL = str(MNIST / "mnist_cnn_qdq.onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 bundled digits as `cimc run` takes them, and their labels."""
    folder = tmp_path_factory.mktemp("digits")
    digits = np.load(MNIST / "test_digits.npz")
    np.save(folder / "digits.npy", digits["images"][:40].astype(np.float32)[:, None] / 255.0)
    np.save(folder / "labels.npy", digits["labels"][:40])
    return folder


def sweep_args(data: Path, *extra: str) -> list[str]:
    return ["sweep", MODEL, "--inputs", str(data / "digits.npy"),
            "--labels", str(data / "labels.npy"), *extra]


def test_the_exact_points_accuracy_is_cimc_runs(data: Path, tmp_path: Path) -> None:
    assert main(sweep_args(data, "--count", "30", "--adc-bits", "9,ideal", "--noise", "0",
                           "--serial", "--json", str(tmp_path / "s.json"))) == 0
    assert main(["run", MODEL, "--inputs", str(data / "digits.npy"),
                 "--outputs", str(tmp_path / "logits.npy")]) == 0
    labels = np.load(data / "labels.npy")[:30]
    logits = np.load(tmp_path / "logits.npy")[:30]
    run_accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    sweep = json.loads((tmp_path / "s.json").read_text())
    assert sweep["exact"][0]["accuracy"] == round(run_accuracy, 6)
    # isaac: 128 rows x 1-bit DAC x 2-bit cells need 9 bits; at 9 and ideal nothing clips.
    for point in sweep["points"]:
        assert point["exact_adc_bits"] == 9
        assert point["accuracy"] == round(run_accuracy, 6) and point["agreement"] == 1.0


def test_csv_json_and_plots(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                            ) -> None:
    out = tmp_path / "out"
    assert main(sweep_args(data, "--count", "20", "--adc-bits", "4..5,ideal", "--noise",
                           "0,0.05", "--seed", "3", "--serial", "-o", str(out / "s.csv"),
                           "--json", str(out / "s.json"), "--plots", str(out / "plots"))) == 0
    captured = capsys.readouterr()
    # One warning for the one target setting, naming both ADC settings below 9 bits.
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "ADC bits 4, 5 are below the 9 bits" in warnings[0], \
        captured.err
    assert "those 4 points" in warnings[0]
    sweep = json.loads((out / "s.json").read_text())
    assert sweep["columns"] == list(COLUMNS)
    assert sweep["samples"] == 20 and sweep["seed"] == 3 and len(sweep["exact"]) == 1
    assert [(p["adc_bits"], p["noise"]) for p in sweep["points"]] == [
        (4, 0.0), (4, 0.05), (5, 0.0), (5, 0.05), (None, 0.0), (None, 0.05)]
    for point in sweep["points"]:
        assert list(point) == list(COLUMNS)
        assert point["target"] == "isaac" and point["samples"] == 20 and point["seed"] == 3
        assert 0 <= point["accuracy"] <= 1 and 0 <= point["agreement"] <= 1
        assert point["cycles"] > 0 and point["energy_nj"] > 0 and point["crossbars"] > 0
    # 4-bit ADCs clip most partial sums: the classes change.
    assert sweep["points"][0]["agreement"] < 0.9
    rows = list(csv.DictReader(io.StringIO((out / "s.csv").read_text())))
    assert len(rows) == 6 and list(rows[0]) == list(COLUMNS)
    assert [row["adc_bits"] for row in rows] == ["4", "4", "5", "5", "ideal", "ideal"]
    assert [float(row["accuracy"]) for row in rows] == [p["accuracy"] for p in sweep["points"]]
    png, svg = (out / "plots" / "accuracy.png").read_bytes(), \
        (out / "plots" / "accuracy.svg").read_bytes()
    assert png.startswith(b"\x89PNG") and b"<svg" in svg
    assert "accuracy" in captured.out and "ideal" in captured.out  # the table
    from cimc.emit.plots import sweep_plots

    again = sweep_plots(sweep)  # the same pictures, byte for byte
    assert again == {"accuracy.png": png, "accuracy.svg": svg}


def test_results_do_not_depend_on_the_shard_size() -> None:
    module = cimc.prepare(MODEL)
    digits = np.load(MNIST / "test_digits.npz")
    test = LabelledSet(digits["images"][:12].astype(np.float32)[:, None] / 255.0,
                   digits["labels"][:12])
    grid = Grid(adc_bits=(5, None), noise=(0.0, 0.5))
    whole = run_sweep(module, test, grid, seed=7, shard_size=12)
    sharded = run_sweep(module, test, grid, seed=7, shard_size=5)
    assert whole.as_dict() == sharded.as_dict()
    # The noise is that strong: it changes results, and another seed draws another device.
    noisy = [p for p in whole.points if p["noise"] == 0.5 and p["adc_bits"] is None][0]
    other = run_sweep(module, test, Grid(noise=(0.5,)), seed=8).points[0]
    assert noisy["agreement"] < 1.0 or other["agreement"] < 1.0


def test_cell_and_dac_bits_compile_variants_that_stay_exact(data: Path, tmp_path: Path) -> None:
    assert main(sweep_args(data, "--count", "10", "--cell-bits", "1,2", "--dac-bits", "1,2",
                           "--serial", "--json", str(tmp_path / "s.json"))) == 0
    sweep = json.loads((tmp_path / "s.json").read_text())
    settings = [(e["cell_bits"], e["dac_bits"]) for e in sweep["exact"]]
    assert settings == [(1, 1), (1, 2), (2, 1), (2, 2)]
    # Slicing and bit-streaming change the time and energy, never the exact result.
    assert len({e["accuracy"] for e in sweep["exact"]}) == 1
    assert all(p["agreement"] == 1.0 for p in sweep["points"])
    cycles = {(e["cell_bits"], e["dac_bits"]): e["cycles"] for e in sweep["exact"]}
    assert cycles[(2, 2)] < cycles[(2, 1)]  # half the input steps
    energy = {(e["cell_bits"], e["dac_bits"]): e["energy_nj"] for e in sweep["exact"]}
    assert energy[(1, 1)] > energy[(2, 1)]  # twice the columns converted


BAD_USAGE = {
    "adc-bits zero": ("--adc-bits", "0"),
    "adc-bits empty range": ("--adc-bits", "9..4"),
    "adc-bits word": ("--adc-bits", "four"),
    "noise negative": ("--noise", "0,-0.1"),
    "noise nan": ("--noise", "nan"),
    "cell-bits 9": ("--cell-bits", "9"),
    "dac-bits zero": ("--dac-bits", "0"),
    "target empty": ("--target", "isaac,"),
    "shard-size zero": ("--shard-size", "0"),
}


@pytest.mark.parametrize(("option", "value"), BAD_USAGE.values(), ids=BAD_USAGE.keys())
def test_a_bad_grid_is_a_usage_error_naming_the_option(
        data: Path, tmp_path: Path, option: str, value: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.csv"
    assert main(sweep_args(data, option, value, "--serial", "-o", str(out))) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err.splitlines()[-1] and "Traceback" not in err
    assert not out.exists()


def test_serial_and_a_ray_address_exclude_each_other(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(sweep_args(data, "--serial", "--ray-address", "auto")) == 2
    assert "not allowed with argument" in capsys.readouterr().err.splitlines()[-1]


def _bad_inputs(data: Path, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    np.save(tmp_path / "float_labels.npy", np.zeros(40, dtype=np.float32))
    np.save(tmp_path / "few_labels.npy", np.zeros(5, dtype=np.int64))
    return {
        "labels missing": (["--labels", str(tmp_path / "none.npy")], "cannot read"),
        "labels float": (["--labels", str(tmp_path / "float_labels.npy")],
                         "labels must be a 1-D .npy array of integers"),
        "too few labels": (["--labels", str(tmp_path / "few_labels.npy")],
                           "holds 5 labels but 40 samples"),
        "count above the samples": (["--count", "41"], "--count 41: "),
        "unknown target": (["--target", "isaac,nochip"], "nochip"),
        "plots a file": (["--plots", str(data / "labels.npy")], "not a directory"),
    }


@pytest.mark.parametrize("case", ["labels missing", "labels float", "too few labels",
                                  "count above the samples", "unknown target", "plots a file"])
def test_bad_inputs_give_one_line_and_write_nothing(
        data: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    extra, expected = _bad_inputs(data, tmp_path)[case]
    out = tmp_path / "out"
    args = sweep_args(data, "--serial", "-o", str(out / "s.csv"), "--json",
                      str(out / "s.json"))
    # A later --labels replaces the first (argparse keeps the last).
    assert main([*args, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cimc: ") and expected in err, err
    assert len(err.splitlines()) == 1 or case == "unknown target", err
    assert not out.exists()


def test_without_ray_the_error_says_how_to_get_it(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    out = tmp_path / "s.csv"
    assert main(sweep_args(data, "--count", "2", "-o", str(out))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install 'cimc[sweep]'" in err and "--serial" in err
    assert not out.exists()


@pytest.mark.slow
def test_ray_gives_the_serial_numbers(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    written = {}
    for name, extra in (("ray", []), ("serial", ["--serial"])):
        out = tmp_path / name
        command = [sys.executable, "-m", "cimc", *sweep_args(
            data, "--count", "24", "--adc-bits", "5,9", "--noise", "0,0.3", "--seed", "4",
            "--shard-size", "10", "-o", str(out / "s.csv"), "--json", str(out / "s.json"),
            *extra)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        # Ray adds nothing to the output: only the ADC warning.
        assert [line for line in result.stderr.splitlines() if line.strip()] == [
            line for line in result.stderr.splitlines() if "warning: ADC bits 5" in line]
        written[name] = ((out / "s.csv").read_bytes(), (out / "s.json").read_bytes())
    assert written["ray"] == written["serial"]


def test_a_variant_outside_what_a_target_file_allows_is_refused() -> None:
    from cimc.diagnostics import CimcError
    from cimc.sweep import target_variant

    with pytest.raises(CimcError, match="dac-bits 20 is out of range"):
        target_variant("isaac", None, 20)
    with pytest.raises(CimcError, match="cell-bits 0 is out of range"):
        target_variant("isaac", 0, None)
    assert target_variant("isaac", 4, 2).cell_bits == 4
    assert target_variant("isaac", None, None) is cimc.load_target("isaac")
