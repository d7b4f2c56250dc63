"""`cimc plot r.json DIR`: PNG and SVG pictures of a compile report, byte-identical
for equal reports; a report of an unbundled target needs its file."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from cimc.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"
NAMES = ["layers.png", "layers.svg", "links.png", "links.svg", "mesh.png", "mesh.svg"]


def test_plots_are_written_and_deterministic(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r.json"
    assert main([str(MODEL), "-o", str(tmp_path / "p.s"), "--target", "pimcomp",
                 "--report", str(report)]) == 0
    runs = []
    for run in ("a", "b"):
        assert main(["plot", str(report), str(tmp_path / run)]) == 0
        files = sorted((tmp_path / run).iterdir())
        assert [f.name for f in files] == NAMES
        runs.append([f.read_bytes() for f in files])
    assert runs[0] == runs[1]
    for content, name in zip(runs[0], NAMES, strict=True):
        if name.endswith(".png"):
            assert content.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert ElementTree.fromstring(content).tag.endswith("svg")
    assert "node_linear" in runs[0][1].decode()  # the layer axis names the layers
    # compile --plots draws the same pictures, with the program and the report.
    assert main([str(MODEL), "-o", str(tmp_path / "q.s"), "--target", "pimcomp",
                 "--plots", str(tmp_path / "c")]) == 0
    assert [f.read_bytes() for f in sorted((tmp_path / "c").iterdir())] == runs[0]


def test_the_link_loads_add_up_to_the_hop_bytes(tmp_path: Path) -> None:
    import json

    report = tmp_path / "r.json"
    assert main([str(MODEL), "-o", str(tmp_path / "p.s"), "--target", "pimcomp",
                 "--report", str(report)]) == 0
    figures = json.loads(report.read_text())
    links = figures["link_bytes"]
    assert links and figures["hop_bytes"] > 0
    # Every message crosses hops links on its XY route: bytes x hops, link by link.
    assert sum(link["bytes"] for link in links) == figures["hop_bytes"]
    assert max(link["bytes"] for link in links) == figures["max_link_bytes"]
    for link in links:  # neighbouring tiles
        (ax, ay), (bx, by) = link["from"], link["to"]
        assert abs(ax - bx) + abs(ay - by) == 1


def test_plots_next_to_a_file_are_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("")
    assert main([str(MODEL), "-o", str(tmp_path / "p.s"), "--plots",
                 str(tmp_path / "taken")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "p.s").exists()


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


def test_sim_plots_the_run_as_a_gantt_chart(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    program = tmp_path / "p.s"
    assert main([str(MODEL), "-o", str(program), "--target", "pimcomp"]) == 0
    digits = np.load(ROOT / "examples" / "mnist" / "test_digits.npz")["images"][:1]
    np.save(tmp_path / "x.npy", digits.astype(np.float32)[:, None] / 255)
    drawn = []
    for run in ("a", "b"):
        assert main(["sim", str(program), "--inputs", str(tmp_path / "x.npy"),
                     "--plots", str(tmp_path / run)]) == 0
        files = sorted((tmp_path / run).iterdir())
        assert [f.name for f in files] == ["pipeline.png", "pipeline.svg"]
        drawn.append([f.read_bytes() for f in files])
    assert drawn[0] == drawn[1]
    assert drawn[0][0].startswith(b"\x89PNG\r\n\x1a\n")
    svg = drawn[0][1].decode()
    assert ElementTree.fromstring(svg).tag.endswith("svg")
    assert "node_conv2d" in svg and "waiting" in svg  # a legend of layers and waiting
    (tmp_path / "taken").write_text("")
    assert main(["sim", str(program), "--inputs", str(tmp_path / "x.npy"),
                 "--plots", str(tmp_path / "taken")]) == 1
    assert "not a directory" in capsys.readouterr().err
