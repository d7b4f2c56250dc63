"""The documentation is true to the code: its examples run, its pipeline specs parse,
and its table of pass options is the registry's."""

from __future__ import annotations

import dataclasses
import doctest
import re
import typing
from pathlib import Path

import pytest

import cimc.pass_manager
from cimc.cli import build_parser
from cimc.pass_manager import parse_pipeline, pass_class, registry

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]

# A pass spec: a name with optional {options}; a pipeline is a comma-separated run of them.
_SPEC = r"[a-z][a-z-]*(?:\{[^{}\s]*\})?"
_PIPELINE = re.compile(rf"(?<![\w{{%.-]){_SPEC}(?:,{_SPEC})*")
_DASH_P = re.compile(r"(?:^|\s)-p\s+('[^']*'|\S+)")


def _pipeline_examples(text: str, dash_p: bool = True) -> set[str]:
    """`-p SPEC` arguments (with `dash_p`), and runs of registered pass names of which one
    has options or which name two passes or more (prose words are not pipelines)."""
    names = set(registry())
    found = {m.group(1).rstrip(".,;:)").strip("'`") for m in _DASH_P.finditer(text)} \
        if dash_p else set()
    found = {spec for spec in found if not spec.isupper()}  # PIPELINE, SPEC: placeholders
    for match in _PIPELINE.finditer(text):
        items = [item.partition("{")[0] for item in cimc.pass_manager._split_top(match.group())]
        if all(item in names for item in items) and ("{" in match.group() or len(items) > 1):
            found.add(match.group())
    return found


def _opt_help(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside an example
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return typing.cast(dict, subparsers.choices)["opt"].format_help()


def test_passes_md_examples_run() -> None:
    result = doctest.testfile(str(ROOT / "docs" / "passes.md"), module_relative=False)
    assert result.failed == 0 and result.attempted > 0


def test_api_md_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the examples name the bundled model from the repository's root
    result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_every_pipeline_example_in_the_docs_and_help_parses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sources = {str(path.relative_to(ROOT)): path.read_text() for path in DOCS}
    sources["cimc opt --help"] = _opt_help(monkeypatch)
    examples = {(where, spec) for where, text in sources.items()
                for spec in _pipeline_examples(text)}
    # Docstrings and comments of the code: runs of pass names (its `-p` is argparse's).
    for folder in ("cimc", "passes", "bench", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            examples |= {(str(path.relative_to(ROOT)), spec)
                         for spec in _pipeline_examples(path.read_text(), dash_p=False)}
    for where in ("docs/passes.md", "cimc opt --help", "cimc/pass_manager.py"):
        assert any(w == where and "{" in spec for w, spec in examples), where
    for where, spec in sorted(examples):
        try:
            parse_pipeline(spec)
        except Exception as exc:  # noqa: BLE001 - reported with where the example is
            pytest.fail(f"{where}: example pipeline '{spec}' does not parse: {exc}")


def _documented_options() -> dict[str, dict[str, tuple[str, str]]]:
    """Pass -> option -> (type, default) from the table under '## Pass options'."""
    text = (ROOT / "docs" / "passes.md").read_text()
    section = text.split("## Pass options", 1)[1].split("\n## ", 1)[0]
    table: dict[str, dict[str, tuple[str, str]]] = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("pass", "---"):
            table.setdefault(cells[0], {})
            if cells[1]:
                table[cells[0]][cells[1]] = (cells[2], cells[3])
    return table


def _registered_options() -> dict[str, dict[str, tuple[str, str]]]:
    table: dict[str, dict[str, tuple[str, str]]] = {}
    for name in registry():
        cls = pass_class(name)
        hints = typing.get_type_hints(cls)
        table[name] = {
            f.name.replace("_", "-"): (getattr(hints[f.name], "__name__", str(hints[f.name])),
                                       '""' if f.default == "" else str(f.default))
            for f in dataclasses.fields(cls) if f.init}
    return table


def test_the_pass_options_table_lists_every_option_of_every_registered_pass() -> None:
    documented, registered = _documented_options(), _registered_options()
    for name, options in registered.items():
        assert name in documented, f"docs/passes.md: add pass '{name}' to the options table"
        for option, (kind, default) in options.items():
            assert documented[name].get(option) == (kind, default), (
                f"docs/passes.md: the options table should read `{name}` | `{option}` | "
                f"{kind} | `{default}`")
    assert set(documented) == set(registered)
    assert {n: set(o) for n, o in documented.items()} == {n: set(o) for n, o in
                                                          registered.items()}


def _module_table() -> dict[str, str]:
    """Member name -> how docs/passes.md's `Module` table writes it (`add_op(kind, ...)`):
    the first column's names, and calls written in the second (`is_constant(name)`)."""
    text = (ROOT / "docs" / "passes.md").read_text()
    section = text.split("## Writing a pass", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    table = section.split("| `Module` member | what it does |\n|---|---|\n", 1)[1]
    for line in table.split("\n\n", 1)[0].splitlines():
        member, meaning = line.strip("|").split("|", 1)
        spans = re.findall(r"`([^`]+)`", member)
        spans += [s for s in re.findall(r"`([^`]+)`", meaning) if re.fullmatch(r"\w+\(.*\)", s)]
        for span in spans:
            found[re.match(r"\w+", span).group()] = span  # type: ignore[union-attr]
    return found


def test_the_module_table_documents_every_public_member_with_its_parameters() -> None:
    import inspect

    from cimc.ir.module import Module

    table = _module_table()
    members = {name for name in [*vars(Module), *vars(Module())] if not name.startswith("_")}
    assert set(table) == members, "docs/passes.md: the Module table should list exactly " \
        f"{sorted(members)}"
    for name, written in table.items():
        member = getattr(Module, name, None)
        if not callable(member):
            assert "(" not in written, written
            continue
        params = [p.name.rstrip("_") for p in inspect.signature(member).parameters.values()
                  if p.name != "self"]
        assert "(" in written, f"docs/passes.md: write `{name}({', '.join(params)})`"
        documented = [arg.strip().split("=")[0] for arg in written[written.index("(") + 1:-1]
                      .split(",") if arg.strip()]
        assert documented == params, f"docs/passes.md: `{written}` takes {params}"


def test_the_requires_of_every_pass_are_those_docs_passes_md_names() -> None:
    """'`lower` needs `fold-qdq`, ..., `replicate` and `place` need `tile`, ...'."""
    text = " ".join((ROOT / "docs" / "passes.md").read_text().split())
    sentence = text.split("A pass names the earlier passes whose results it reads in "
                          "`requires` (", 1)[1].split(")", 1)[0]
    documented: dict[str, set[str]] = {}
    for names, needed in re.findall(r"((?:`[a-z-]+`(?: and )?)+) needs? ((?:`[a-z-]+`(?: and "
                                    r")?)+)", sentence):
        for name in re.findall(r"`([a-z-]+)`", names):
            documented[name] = set(re.findall(r"`([a-z-]+)`", needed))
    registered = {name: set(pass_class(name).requires) for name in registry()
                  if pass_class(name).requires}
    assert documented == registered


def test_the_pass_class_shown_in_docs_passes_md_is_the_registered_one() -> None:
    """The `class Schedule(BackendPass)` sketch: its requires, options and defaults are the
    real pass's."""
    text = (ROOT / "docs" / "passes.md").read_text()
    sketch = text.split("class Schedule(BackendPass):", 1)[1].split("def apply", 1)[0]
    cls = pass_class("schedule")
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
    shown = dict(re.findall(r"^    (\w+): [^=\n]+= (.+)$", sketch, re.MULTILINE))
    assert shown.pop("name") == f'"{cls.name}"'
    assert shown.pop("requires").replace('"', "'") == repr(cls.requires)
    assert {k: repr(v) for k, v in fields.items()} == {
        k: v.replace('"', "'") for k, v in shown.items()}


def test_the_readme_python_example_runs_and_prints_what_it_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The indented lines after 'The same from Python', run from a copy of the
    repository's root (`examples` linked), write prog.s + prog.img and print what the
    comment of their last line shows."""
    text = (ROOT / "README.md").read_text()
    after = text.split("The same from Python", 1)[1].split("\n\n", 1)[1]
    lines = [line[4:] for line in after.split("\n\n", 1)[0].splitlines()]
    assert lines[0] == "import cimc" and "cimc.compile(" in lines[1], lines
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(lines), "README.md", "exec"), {})  # noqa: S102 - our own docs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples", "prog.img", "prog.s"]
    assert capsys.readouterr().out.strip() == lines[-1].split("# ", 1)[1]


def test_docs_ir_md_lists_every_onnx_operator_the_importer_reads_with_its_versions() -> None:
    """The table of docs/ir.md "Supported ONNX operators": exactly the importer's ops,
    each with the versions onnx defines for it (its since-opsets)."""
    import onnx.defs

    from cimc.frontend.movement import MOVEMENT_CONVERTERS
    from cimc.frontend.ops import CONVERTERS
    from cimc.frontend.quant import QUANT_CONVERTERS
    from cimc.frontend.recurrent import RECURRENT_CONVERTERS

    text = (ROOT / "docs" / "ir.md").read_text()
    section = text.split("## Supported ONNX operators", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[1][:1].isdigit():
            rows[cells[0]] = [int(v) for v in cells[1].split(",")]
    history: dict[str, set[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in ("", "ai.onnx"):
            history.setdefault(schema.name, set()).add(schema.since_version)
    assert sorted(rows) == sorted({*CONVERTERS, *QUANT_CONVERTERS, *RECURRENT_CONVERTERS,
                                   *MOVEMENT_CONVERTERS})
    for op, versions in rows.items():
        assert versions == sorted(history[op]), op
