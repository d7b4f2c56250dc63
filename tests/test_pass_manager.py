"""The pass manager: pipeline specs, running passes, printing and timing between them."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from cimc import passes, pipeline
from cimc.cli import main
from cimc.diagnostics import CimcError
from cimc.ir.module import Module, TensorType
from cimc.ir.text import parse_module, print_module
from cimc.pass_base import Pass
from cimc.pass_manager import parse_pipeline, run_pipeline


@dataclass
class AddRelu(Pass):
    """Test pass: append `count` relus after the module's first output."""

    name: ClassVar[str] = "add-relu"
    count: int = 1

    def apply(self, module: Module) -> None:
        for _ in range(self.count):
            out = module.outputs[0]
            op = module.add_op("relu", [out], [module.values[out]])
            module.outputs[0] = op.outputs[0]


@dataclass
class Options(Pass):
    """Test pass with one option of every supported type; does nothing."""

    name: ClassVar[str] = "options"
    max_count: int = 0
    ratio: float = 1.0
    enabled: bool = True
    label: str = ""
    sizes: list[int] = field(default_factory=list)
    scales: tuple[float, ...] = ()
    limit: int | None = None

    def apply(self, module: Module) -> None:
        pass


@dataclass
class Break(Pass):
    """Test pass that leaves an op of an unknown kind behind."""

    name: ClassVar[str] = "break"

    def apply(self, module: Module) -> None:
        next(module.ops()).kind = "bogus"


@pytest.fixture(autouse=True)
def test_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {cls.name: f"{__name__}:{cls.__name__}" for cls in (AddRelu, Options, Break)}
    table["missing"] = "passes.no_such_module:Missing"
    monkeypatch.setattr(passes, "PASSES", table)


def small_module() -> Module:
    m = Module("small")
    m.add_input("x", TensorType((1, 4), "f32"))
    w = m.add_constant("w", np.eye(4, dtype=np.float32))
    gemm = m.add_op("gemm", ["x", w], [TensorType((1, 4), "f32")], name="fc")
    m.outputs.append(gemm.outputs[0])
    return m


# ---- pipeline specs ------------------------------------------------------

def test_spec_options_are_converted_to_field_types() -> None:
    add, options = parse_pipeline(
        "add-relu{count=2}, options{max-count=3,ratio=0.5,enabled=false,label=\"a b\","
        "sizes=[1, 2],scales=[0.5],limit=none}")
    assert add == AddRelu(count=2)
    assert options == Options(max_count=3, ratio=0.5, enabled=False, label="a b", sizes=[1, 2],
                              scales=(0.5,), limit=None)


def test_empty_spec_is_no_passes() -> None:
    assert parse_pipeline("") == []
    assert parse_pipeline("options{}") == [Options()]


def test_unknown_pass_lists_the_valid_ones() -> None:
    with pytest.raises(CimcError, match=r"unknown pass 'canonicalise'; valid passes: "
                                        r"add-relu, break, missing, options$"):
        parse_pipeline("add-relu,canonicalise")


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(CimcError) as info:
        parse_pipeline("options{size=1}")
    assert str(info.value) == ("error: pass 'options' has no option 'size'; valid options: "
                               "max-count, ratio, enabled, label, sizes, scales, limit")


@pytest.mark.parametrize(("spec", "message"), [
    ("add-relu{count=two}", "pass 'add-relu' option 'count' expects int, got 'two'"),
    ("options{enabled=maybe}", "pass 'options' option 'enabled' expects bool, got 'maybe'"),
    ("options{sizes=3}", "pass 'options' option 'sizes' expects a list like [1,2], got '3'"),
    ("add-relu{count}", "pass 'add-relu': option 'count' needs a value (name=value)"),
    ("add-relu{count=1", "unbalanced braces or brackets in pipeline 'add-relu{count=1'"),
    ("add-relu,,options", "empty pass name in pipeline 'add-relu,,options'"),
    ("missing", "pass 'missing' cannot be loaded from passes.no_such_module:Missing"),
])
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(CimcError) as info:
        parse_pipeline(spec)
    assert info.value.message.startswith(message)


def test_pipelines_name_registered_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real registry
    for name in pipeline.FRONTEND + pipeline.BACKEND:
        assert name in passes.PASSES


# ---- running -------------------------------------------------------------

def test_passes_run_in_order_and_return_times() -> None:
    m = small_module()
    timings = run_pipeline(m, parse_pipeline("add-relu,options,add-relu{count=2}"))
    assert [t.name for t in timings] == ["add-relu", "options", "add-relu"]
    assert all(t.seconds >= 0 for t in timings)
    assert [op.kind for op in m.ops()] == ["gemm", "relu", "relu", "relu"]


def test_verification_failure_names_the_pass() -> None:
    with pytest.raises(CimcError) as info:
        run_pipeline(small_module(), parse_pipeline("add-relu,break"))
    assert info.value.message.startswith(
        "invalid IR after pass 'break': op 'fc' (bogus): unknown op kind; valid kinds: ")


def test_invalid_input_is_not_blamed_on_a_pass() -> None:
    m = small_module()
    m.op("fc").attrs["clamp"] = [0]
    with pytest.raises(CimcError) as info:
        run_pipeline(m, parse_pipeline("add-relu"))
    assert info.value.message == ("invalid IR before the first pass: op 'fc' (gemm): attribute "
                                  "'clamp' must be a list of 2 numbers, got [0]")


def test_print_after_all_dumps_each_pass_in_order() -> None:
    m, out = small_module(), io.StringIO()
    run_pipeline(m, parse_pipeline("add-relu,options"), print_after_all=True, out=out)
    first, second = out.getvalue().split("// -----// IR Dump After options //----- //\n")
    assert first.startswith("// -----// IR Dump After add-relu //----- //\nmodule @small {\n")
    assert "%relu = relu(%fc) : f32[1,4]\n  output %relu\n}\n" in first
    assert second == print_module(m)


def test_print_after_named_pass_only() -> None:
    out = io.StringIO()
    run_pipeline(small_module(), parse_pipeline("add-relu,options"), print_after={"options"},
                 out=out)
    assert out.getvalue().count("IR Dump After") == 1
    assert out.getvalue().startswith("// -----// IR Dump After options //----- //\n")


def test_print_after_a_pass_not_in_the_pipeline_is_an_error() -> None:
    with pytest.raises(CimcError, match=r"--print-ir-after break: no such pass in the pipeline "
                                        r"\(add-relu\)"):
        run_pipeline(small_module(), parse_pipeline("add-relu"), print_after={"break"})


def test_time_passes_prints_a_table_with_every_pass() -> None:
    out = io.StringIO()
    timings = run_pipeline(small_module(), parse_pipeline("add-relu,options"), time_passes=True,
                           out=out)
    table = out.getvalue()
    assert "Pass execution timing report" in table
    rows = [line.split()[-1] for line in table.splitlines() if "%)" in line]
    assert rows == ["add-relu", "options", "(verify)", "Total"]
    assert f"{timings[0].seconds:8.4f}" in table


def test_callbacks_see_each_pass_after_verification() -> None:
    seen: list[tuple[str, int]] = []
    run_pipeline(small_module(), parse_pipeline("add-relu,add-relu"),
                 callbacks=[lambda p, m: seen.append((p.name, m.graph.number_of_nodes()))])
    assert seen == [("add-relu", 2), ("add-relu", 3)]


# ---- cimc opt -------------------------------------------------------------

def write_small(tmp_path: Path) -> Path:
    path = tmp_path / "small.cir"
    path.write_text(print_module(small_module()))
    return path


def test_opt_prints_the_module_after_the_pipeline(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    assert main(["opt", str(path), "-p", "add-relu{count=2}"]) == 0
    printed = capsys.readouterr().out
    assert "%relu_1 = relu(%relu) : f32[1,4]\n  output %relu_1\n}\n" in printed
    assert print_module(parse_module(printed)) == printed


def test_opt_writes_output_file_and_dumps_to_stderr(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path, out = write_small(tmp_path), tmp_path / "out" / "result.cir"
    status = main(["opt", str(path), "-p", "add-relu,options", "-o", str(out),
                   "--print-ir-after", "options", "--time-passes"])
    captured = capsys.readouterr()
    assert status == 0 and captured.out == ""
    assert "// -----// IR Dump After options //----- //" in captured.err
    assert "Pass execution timing report" in captured.err
    assert out.read_text().endswith("%relu = relu(%fc) : f32[1,4]\n  output %relu\n}\n")


def test_opt_failure_leaves_no_output_file(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.cir"
    assert main(["opt", str(write_small(tmp_path)), "-p", "break", "-o", str(out)]) == 1
    assert "cimc: error: invalid IR after pass 'break'" in capsys.readouterr().err
    assert not out.exists()


def test_opt_missing_file_is_a_clear_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(tmp_path / "nope.cir")]) == 1
    assert capsys.readouterr().err == (
        f"cimc: error: cannot read {tmp_path / 'nope.cir'}: No such file or directory\n")


def test_opt_elides_large_constants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = small_module()
    m.constants["w"] = np.arange(16, dtype=np.float32).reshape(4, 4) + 0.5
    m.constants["w"][0, 0] = 100.0  # 16 elements still print as a list
    m.add_constant("big", np.arange(32, dtype=np.int8))
    path = tmp_path / "m.cir"
    path.write_text(print_module(m))
    assert main(["opt", str(path), "--elide-constants"]) == 0
    printed = capsys.readouterr().out
    assert "const %big : i8[32] = elided\n" in printed
    assert "const %w : f32[4,4] = [100.0, 1.5, " in printed


def test_opt_imports_onnx_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["data"], ["y"], name="relu_node")], "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["opt", str(path), "--input-shape", "data=2,3"]) == 0
    printed = capsys.readouterr().out
    assert "input %data : f32[2,3]\n" in printed
    assert '%y = relu(%data) : f32[2,3] loc("relu_node")\n' in printed


def test_opt_split_input_file_runs_each_case(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cases.cir"
    path.write_text("module @a {\n}\n// -----\nmodule @b {\n  input %x : f32[1]\n"
                    "  output %x\n}\n")
    assert main(["opt", "--split-input-file", str(path)]) == 0
    assert capsys.readouterr().out == (
        "module @a {\n}\n// -----\nmodule @b {\n  input %x : f32[1]\n  output %x\n}\n")


def test_opt_split_input_file_reports_every_failing_case(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cases.cir"
    path.write_text("module @a {\n  output %u\n}\n// -----\nmodule @b {\n}\n"
                    "// -----\nmodule @c {\n  %y = relu() : f32[1]\n}\n")
    assert main(["opt", "--split-input-file", str(path)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cimc:")]
    assert errors == [
        f"cimc: {path}:2:10: error: use of undefined value %u",
        f"cimc: {path}:9:3: error: op 'y' (relu): expected 1 operands, got 0",
    ]
