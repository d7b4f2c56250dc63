"""`cimc plot r.json DIR`: PNG and SVG pictures of a compile report, byte-identical
for equal reports; a report of an unbundled target needs its file."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from cimc.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"


def test_plots_are_written_and_deterministic(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r.json"
    assert main([str(MODEL), "-o", str(tmp_path / "p.s"), "--target", "pimcomp",
                 "--report", str(report)]) == 0
    runs = []
    for run in ("a", "b"):
        assert main(["plot", str(report), str(tmp_path / run)]) == 0
        files = sorted((tmp_path / run).iterdir())
        assert [f.name for f in files] == ["layers.png", "layers.svg", "mesh.png", "mesh.svg"]
        runs.append([f.read_bytes() for f in files])
    assert runs[0] == runs[1]
    for content, name in zip(runs[0], ["layers.png", "layers.svg", "mesh.png", "mesh.svg"],
                             strict=True):
        if name.endswith(".png"):
            assert content.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert ElementTree.fromstring(content).tag.endswith("svg")
    assert "node_linear" in runs[0][1].decode()  # the layer axis names the layers


def test_a_report_of_a_target_file_needs_that_file(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "own.toml"
    own.write_text((ROOT / "targets" / "isaac.toml").read_text().replace(
        'name = "isaac"', 'name = "own"'))
    report = tmp_path / "r.json"
    assert main([str(MODEL), "-o", str(tmp_path / "p.s"), "--target", str(own),
                 "--report", str(report)]) == 0
    capsys.readouterr()
    assert main(["plot", str(report), str(tmp_path / "out")]) == 1
    assert "give its file with --target FILE" in capsys.readouterr().err
    assert main(["plot", str(report), str(tmp_path / "out"), "--target", str(own)]) == 0
