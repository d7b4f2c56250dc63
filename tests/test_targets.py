"""Target descriptions: bundled files, validation messages with lines, CLI, docs table."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.targets import (
    Target,
    TargetError,
    list_targets,
    load_target,
    parse_target,
    target_warnings,
)
from cimc.targets.describe import to_toml
from cimc.targets.docgen import DOC, with_table
from cimc.targets.schema import SCHEMA
from cimc.targets.validate import check_target

# A small valid file; tests edit one line and assert the line number reported.
VALID = """\
name = "mini"
description = "a small valid target"

[chip]
mesh_x = 2
mesh_y = 2
cores_per_tile = 2

[core]
crossbars_per_core = 4

[crossbar]
rows = 16
cols = 16
cell_bits = 2

[latency]
scalar = 1

[energy]
scalar = 1.0
"""


def line_of(text: str, line: str, start: int = 0) -> int:
    """1-based number of the first line equal to `line` at or after line index `start`."""
    lines = text.splitlines()
    return lines.index(line, start) + 1


def write(tmp_path: Path, text: str, name: str = "chip.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load_error(tmp_path: Path, text: str) -> TargetError:
    file = write(tmp_path, text)
    with pytest.raises(TargetError) as info:
        load_target(file)
    assert info.value.file == file
    return info.value


# --- bundled targets ---------------------------------------------------------------------

def test_bundled_target_names() -> None:
    assert list_targets() == ["edge", "isaac", "pimcomp", "puma", "tiny"]


@pytest.mark.parametrize("name", list_targets())
def test_bundled_target_loads_and_passes_all_checks(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.cores <= target.mesh_x * target.mesh_y * target.cores_per_tile
    text = Path(target.source).read_text()
    assert check_target(target, text) == []
    # every key is written out in the bundled files, so nothing depends on defaults
    data = tomllib.loads(text)
    written = {f"{s}.{k}" for s, table in data.items() if isinstance(table, dict) for k in table}
    written |= {s for s, value in data.items() if not isinstance(value, dict)}
    missing = {key.path for key in SCHEMA if key.path not in written and key.path != "chip.cores"}
    assert missing == set()


@pytest.mark.parametrize("name", list_targets())
def test_shown_target_loads_back_equal(name: str) -> None:
    target = load_target(name)
    again = parse_target(to_toml(target), "shown.toml")
    assert dataclasses.replace(again, source=target.source) == target


def test_pimcomp_is_the_published_configuration() -> None:
    t = load_target("pimcomp")
    assert (t.cores, t.mesh_x, t.mesh_y, t.crossbars_per_core) == (136, 12, 12, 64)
    assert (t.rows, t.cols, t.cell_bits, t.adc_bits, t.dac_bits) == (128, 128, 2, 8, 1)
    assert t.total_crossbars == 136 * 64


def test_tiny_needs_tiling_cores_and_network() -> None:
    t = load_target("tiny")
    assert (t.mesh_x, t.mesh_y, t.cores_per_tile, t.cores) == (2, 2, 2, 8)
    assert (t.crossbars_per_core, t.rows, t.cols, t.cell_bits, t.dac_bits) == (4, 16, 16, 2, 1)
    assert t.slices == 4 and t.input_steps == 8 and t.mvm_cycles == 8 * t.latency.mvm
    # 4 crossbars of 16x16 2-bit cells hold 4 * 16 * 16 / 4 = 256 8-bit weights per core
    assert t.weight_capacity == 8 * 256
    assert t.tile_of(5) == (0, 1) and t.hops(0, 1) == 0 and t.hops(0, 7) == 2


def test_edge_is_one_core_with_uint8_inputs() -> None:
    t = load_target("edge")
    assert t.cores == 1 and t.total_crossbars == 1
    assert t.weight_bits == 8 and t.activation_bits == 8 and t.activation_signed is False


def test_isaac_adc_warning_and_tiny_has_none() -> None:
    assert any("9 bits" in note for note in target_warnings(load_target("isaac")))
    assert target_warnings(load_target("tiny")) == []


def test_schema_keys_are_the_target_attributes() -> None:
    flat = {f.name for f in dataclasses.fields(Target)} - {"latency", "energy", "source"}
    assert flat == {k.name for k in SCHEMA if k.section not in ("latency", "energy")}
    for section in ("latency", "energy"):
        nested = dataclasses.fields(getattr(load_target("tiny"), section))
        assert [f.name for f in nested] == [k.name for k in SCHEMA if k.section == section]


def test_defaults_fill_in_and_cores_derive_from_mesh(tmp_path: Path) -> None:
    t = load_target(write(tmp_path, VALID, "mini.toml"))
    assert t.cores == 8 and t.weight_bits == 8 and t.activation_signed is True
    assert t.clock_mhz == 1000.0 and isinstance(t.clock_mhz, float)
    assert t.latency.mvm == 100 and t.energy.adc_per_conversion == 1.0


# --- validation errors: file, key path, line ---------------------------------------------

def test_wrong_type_names_key_and_line(tmp_path: Path) -> None:
    text = VALID.replace("mesh_y = 2", 'mesh_y = "2"')
    error = load_error(tmp_path, text)
    [problem] = error.problems
    assert problem.path == "chip.mesh_y"
    assert problem.line == line_of(text, 'mesh_y = "2"') == 6
    assert str(error).startswith(f"{error.file}:6:10: error: chip.mesh_y: expected integer 1..256")
    assert 'got string "2"' in str(error)


def test_boolean_is_not_an_integer(tmp_path: Path) -> None:
    error = load_error(tmp_path, VALID.replace("rows = 16", "rows = true"))
    assert error.problems[0].path == "crossbar.rows"
    assert "got boolean true" in str(error)


def test_out_of_range_says_what_is_allowed(tmp_path: Path) -> None:
    text = VALID.replace("cell_bits = 2", "cell_bits = 9")
    error = load_error(tmp_path, text)
    assert [(p.path, p.line) for p in error.problems] == [("crossbar.cell_bits", 15)]
    assert "9 is out of range; allowed: integer 1..8 bits" in str(error)
    assert str(error).splitlines()[1] == "cell_bits = 9"


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    text = VALID.replace("cell_bits = 2", "cel_bits = 2")
    error = load_error(tmp_path, text)
    # the misspelling is reported once, not also as a missing cell_bits
    [problem] = error.problems
    assert (problem.path, problem.line) == ("crossbar.cel_bits", 15)
    assert "did you mean 'cell_bits'?" in str(error)
    assert str(error).startswith(f"{error.file}:15:1: error: crossbar.cel_bits")  # caret on key


def test_key_in_wrong_section_says_where_it_belongs(tmp_path: Path) -> None:
    text = VALID.replace("rows = 16\n", "")
    text = text.replace("crossbars_per_core = 4", "crossbars_per_core = 4\nrows = 16")
    error = load_error(tmp_path, text)
    [problem] = error.problems
    assert (problem.path, problem.line) == ("core.rows", 11)
    assert "'rows' belongs in [crossbar]" in str(error)


def test_unknown_section_suggests_the_close_one(tmp_path: Path) -> None:
    text = VALID.replace("[energy]", "[energi]")
    error = load_error(tmp_path, text)
    [problem] = error.problems
    assert (problem.path, problem.line) == ("energi", line_of(text, "[energi]"))
    assert "did you mean 'energy'?" in str(error)


def test_misspelled_section_is_one_problem(tmp_path: Path) -> None:
    text = VALID.replace("[crossbar]", "[crosbar]")
    error = load_error(tmp_path, text)
    assert [(p.path, p.line) for p in error.problems] == [("crosbar", 12)]
    assert "did you mean 'crossbar'?" in str(error)


def test_missing_section_is_one_problem_listing_its_keys(tmp_path: Path) -> None:
    text = VALID.replace("[crossbar]\nrows = 16\ncols = 16\ncell_bits = 2\n", "")
    error = load_error(tmp_path, text)
    assert [p.path for p in error.problems] == ["crossbar"]
    assert "missing section [crossbar]; it needs rows, cols, cell_bits" in str(error)


def test_missing_required_key_points_at_its_section(tmp_path: Path) -> None:
    text = VALID.replace("rows = 16\n", "")
    error = load_error(tmp_path, text)
    [problem] = error.problems
    assert (problem.path, problem.line) == ("crossbar.rows", line_of(text, "[crossbar]"))
    assert "missing required key; add `rows = <integer 1..65536>` under [crossbar]" in str(error)


def test_same_key_name_in_two_sections_gets_the_right_line(tmp_path: Path) -> None:
    text = VALID.replace("scalar = 1.0", 'scalar = "cheap"')
    error = load_error(tmp_path, text)
    assert [(p.path, p.line) for p in error.problems] == [("energy.scalar", 21)]


def test_dotted_keys_are_located(tmp_path: Path) -> None:
    text = VALID.replace("[crossbar]\nrows = 16\ncols = 16\ncell_bits = 2\n", "")
    text = ("crossbar.rows = 16\ncrossbar.cols = 16\ncrossbar.dac_bits = 0\n"
            "crossbar.cell_bits = 2\n" + text)
    error = load_error(tmp_path, text)
    assert [(p.path, p.line) for p in error.problems] == [("crossbar.dac_bits", 3)]


def test_all_problems_are_reported_together_in_line_order(tmp_path: Path) -> None:
    text = (VALID.replace("mesh_y = 2", 'mesh_y = "2"').replace("cell_bits = 2", "cel_bits = 2")
            .replace("cols = 16", "cols = 0"))
    error = load_error(tmp_path, text)
    assert [(p.path, p.line) for p in error.problems] == [
        ("chip.mesh_y", 6), ("crossbar.cols", 14), ("crossbar.cel_bits", 15)]
    message = str(error)
    assert "3 problems" in message
    for line in (6, 14, 15):
        assert f"{error.file}:{line}: " in message


@pytest.mark.parametrize("old, new, path, fragment", [
    ("cores_per_tile = 2", "cores_per_tile = 2\ncores = 9", "chip.cores", "9 cores do not fit"),
    ("cell_bits = 2", "cell_bits = 4\n[precision]\nweight_bits = 3", "crossbar.cell_bits",
     "exceed precision.weight_bits = 3"),
    ("crossbars_per_core = 4", "crossbars_per_core = 4\nlocal_memory_bytes = 64",
     "core.local_memory_bytes", "give at least 80"),
])
def test_cross_field_checks(tmp_path: Path, old: str, new: str, path: str, fragment: str) -> None:
    text = VALID.replace(old, new)
    error = load_error(tmp_path, text)
    [problem] = error.problems
    key_line = new.splitlines()[-1] if path != "crossbar.cell_bits" else "cell_bits = 4"
    assert (problem.path, problem.line) == (path, line_of(text, key_line))
    assert fragment in str(error)


def test_syntax_error_gives_file_line_and_column(tmp_path: Path) -> None:
    file = write(tmp_path, VALID.replace("mesh_x = 2", "mesh_x = "))
    with pytest.raises(CimcError) as info:
        load_target(file)
    assert str(info.value).startswith(f"{file}:5:10: error: TOML syntax: Invalid value")


def test_unknown_target_name_suggests_and_lists() -> None:
    with pytest.raises(CimcError, match="unknown target 'isac'; did you mean 'isaac'"):
        load_target("isac")
    with pytest.raises(CimcError, match="not found"):
        load_target("no/such/file.toml")


# --- command line ------------------------------------------------------------------------

def test_cli_list_is_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_targets()
    columns = {re.match(r"\S+\s+", line).end() for line in lines}  # type: ignore[union-attr]
    assert columns == {len("pimcomp") + 2}  # descriptions start in one column
    assert any(line.startswith("pimcomp") and "136 cores" in line for line in lines)


def test_cli_show_prints_resolved_toml_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "show", "tiny"]) == 0
    out = capsys.readouterr().out
    assert tomllib.loads(out)["crossbar"]["rows"] == 16  # the whole output is valid TOML
    assert "total crossbars: 32" in out
    assert "weight capacity: 2,048 weights of 8 bits = 2,048 bytes" in out
    assert "peak MVMs/s:     4e+07" in out  # 32 crossbars x 100 MHz / 80 cycles


def test_cli_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write(tmp_path, VALID)
    assert main(["targets", "check", file]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{file}: ok\n") and "total crossbars: 32" in out


def test_cli_check_error_exits_nonzero_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, VALID, "good.toml")
    bad = write(tmp_path, VALID.replace("cell_bits = 2", "cell_bits = 9"), "bad.toml")
    assert main(["targets", "check", bad]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cimc: {bad}:15:13: error: crossbar.cell_bits")
    assert "Traceback" not in err
    assert main(["targets", "check", good, bad]) == 1
    captured = capsys.readouterr()
    assert f"{good}: ok" in captured.out and f"{bad}:15:13" in captured.err


# --- documentation -----------------------------------------------------------------------

def test_docs_key_table_is_fresh() -> None:
    document = DOC.read_text()
    assert with_table(document) == document, "run `python -m cimc.targets.docgen`"
    for key in SCHEMA:
        assert f"| `{key.path}` |" in document


def test_docs_worked_example_loads_with_the_stated_figures(tmp_path: Path) -> None:
    example = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert example
    t = load_target(write(tmp_path, example.group(1), "mychip.toml"))
    assert (t.total_crossbars, t.weight_capacity, t.mvm_cycles) == (256, 8_388_608, 200)
    assert any("14 bits" in note for note in target_warnings(t))


def test_docs_error_example_is_what_check_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    document = DOC.read_text()
    example = re.search(r"```toml\n(.*?)```", document, re.S)
    assert example
    slips = (example.group(1).replace("mesh_y = 2", 'mesh_y = "2"')
             .replace("cell_bits = 4", "cel_bits = 4").replace("adc_bits = 8", "adc_bits = 99"))
    monkeypatch.chdir(tmp_path)
    write(tmp_path, slips, "mychip.toml")
    assert main(["targets", "check", "mychip.toml"]) == 1
    shown = document.split("    $ cimc targets check mychip.toml\n", 1)[1].split("\n\n", 1)[0]
    assert capsys.readouterr().err == "\n".join(line[4:] for line in shown.splitlines()) + "\n"
