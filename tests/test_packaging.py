"""The distribution as a user installs it: one import namespace, `cimc`.

passes/, isa/ and targets/ are top-level folders of the repository but install as
cimc.passes, cimc.isa and cimc.targets (docs/architecture.md), so that a user's
environment never gains top-level packages named `passes`, `isa` or `targets`.
The wheel is built from this checkout and installed into a fresh virtual
environment, which then compiles and simulates the bundled MNIST model from a
directory outside the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "examples" / "mnist" / "mnist_cnn_qdq.onnx"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools.command.bdist_wheel")  # setuptools >= 70.1 builds wheels
    # From a copy: building writes build/ and *.egg-info beside the sources.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("cimc", "passes", "isa", "targets"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(source)],
                   check=True, capture_output=True, cwd=out)
    (found,) = out.glob("cimc-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_with_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"cimc"}
    for needed in ("cimc/ir/cir.lark", "cimc/isa/asm.lark", "cimc/targets/isaac.toml",
                   "cimc/passes/lower/host.py", "cimc/isa/simulator/machine.py"):
        assert needed in names, needed


@pytest.mark.slow
def test_the_installed_wheel_compiles_and_simulates_outside_the_repository(
        wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies (onnx, ortools, ...) come from this environment's site-packages, as
    # a plain path: its .pth files, among them this checkout's editable install, stay unread.
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = (
        "import importlib.util, numpy as np, cimc\n"
        f"assert cimc.__file__.startswith({purelib!r}), cimc.__file__\n"
        "for name in ('passes', 'isa', 'targets'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        f"program = cimc.compile({str(MNIST)!r}, target='isaac', placer='sequential')\n"
        "program.save('prog.s')\n"
        "x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)\n"
        "got = program.simulate(x).outputs['logits']\n"
        "want = cimc.run_reference(program.integer, x)['logits']\n"
        "assert np.array_equal(got, want)\n"
        "print('ok')\n")
    result = subprocess.run([str(python), "-c", script], cwd=work, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert (work / "prog.s").exists() and (work / "prog.img").exists()
