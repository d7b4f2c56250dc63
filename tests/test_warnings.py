"""Settings that silently change what a run means get a one-line warning: an ADC
what-if narrower than an exact partial sum, a target asking for wider activations than
the ISA computes with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.cli import main
from cimc.targets import exact_adc_bits, load_target

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"


def test_wider_activations_than_the_isa_are_a_warning(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "targets" / "isaac.toml").read_text()
    assert "activation_bits = 8" in text
    wide = tmp_path / "wide.toml"
    wide.write_text(text.replace("activation_bits = 8", "activation_bits = 12"))
    assert main([str(MODEL), "-o", str(tmp_path / "p.s"), "--target", str(wide)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "activation_bits = 12" in err
    assert main([str(MODEL), "-o", str(tmp_path / "q.s")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_adc_narrower_than_an_exact_sum_is_a_warning(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(MODEL), "-o", str(tmp_path / "p.s")]) == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    needed, _ = exact_adc_bits(load_target("isaac"))
    capsys.readouterr()
    for bits, warned in ((needed - 1, True), (needed, False)):
        assert main(["sim", str(tmp_path / "p.s"), "--inputs", str(tmp_path / "x.npy"),
                     "--adc-bits", str(bits)]) == 0
        err = capsys.readouterr().err
        assert (f"--adc-bits {bits} is below the {needed} bits" in err) == warned, err
