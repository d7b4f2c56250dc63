"""The textual IR: printing and parsing give back the same module and text."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cimc.diagnostics import CimcError
from cimc.ir.module import DTYPES, Module, Quant, TensorType
from cimc.ir.text import parse_module, print_module


def snapshot(module: Module) -> tuple:
    """Everything a module holds, in a form == can compare (floats by repr, data by bytes)."""
    constants = [(k, a.dtype.str, a.shape, a.tobytes()) for k, a in module.constants.items()]
    ops = [(op.name, op.kind, op.inputs, op.outputs, repr(op.attrs)) for op in module.ops()]
    values = sorted((k, repr(v)) for k, v in module.values.items())
    return module.name, module.inputs, module.outputs, values, constants, ops


def round_trip(module: Module) -> str:
    text = print_module(module)
    parsed = parse_module(text)
    assert snapshot(parsed) == snapshot(module)
    assert print_module(parsed) == text
    return text


def onnx_like_module() -> Module:
    """A module with the awkward names, types and attributes an ONNX import produces."""
    m = Module("torch_jit")
    m.add_input("gpu_0/data_0", TensorType((1, 3, 4, 4), "f32"))
    m.add_input("mask", TensorType((4,), "bool"))
    m.add_constant("onnx::Conv_12", np.arange(-27, 27, dtype=np.int8).reshape(2, 3, 3, 3),
                   Quant((0.015625, 0.0078125), (0, 0), axis=0))
    m.add_constant("conv1.bias", np.array([1000, -7], dtype=np.int32), Quant((1e-4,), (0,)))
    m.add_constant("ones", np.ones((8, 8), dtype=np.float32))
    m.add_constant("idx", np.array([[1, 2]], dtype=np.int64))
    m.add_constant("u", np.array([200], dtype=np.uint8))
    m.add_input("scalar", TensorType((), "f32"))
    m.add_constant("empty", np.zeros((0, 3), dtype=np.float32))
    m.add_constant("w_f", np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5))
    u8 = TensorType((1, 3, 4, 4), "u8", Quant((0.02,), (128,)))
    q = m.add_op("quantize", ["gpu_0/data_0"], [u8], name="/quant/QuantizeLinear",
                 outputs=["/quant/QuantizeLinear_output_0"])
    conv = m.add_op(
        "conv", [q.outputs[0], "onnx::Conv_12", "conv1.bias"],
        [TensorType((1, 2, 4, 4), "i8", Quant((0.05,), (-128,)))],
        name="/conv1/Conv", outputs=["/conv1/Conv_output_0"],
        attrs={"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1,
               "clamp": [-128, 127]},
    )
    m.add_op("split", [conv.outputs[0]],
             [TensorType((1, 1, 4, 4), "i8", Quant((0.05,), (-128,)))] * 2,
             name="split", outputs=["a b", 'quote"d'],
             attrs={"axis": 1, "ratio": 0.1, "mode": "even\n", "flag": True, "off": False,
                    "sizes": [1, 1], "weights": [0.5, -2.0], "none": []})
    m.outputs += ["a b", 'quote"d']
    return m


def test_onnx_like_module_round_trips_with_quoted_names() -> None:
    text = round_trip(onnx_like_module())
    assert 'input %gpu_0/data_0 : f32[1,3,4,4]' in text
    assert 'const %"onnx::Conv_12" : i8[2,3,3,3] q<axis=0, scale=[0.015625, 0.0078125], ' \
           'zp=[0, 0]> = base64"' in text
    assert "const %conv1.bias : i32[2] q<scale=0.0001, zp=0> = [1000, -7]" in text
    assert "const %ones : f32[8,8] = splat(1.0)" in text
    assert "const %u : u8[1] = splat(200)" in text
    assert "input %scalar : f32[]\n" in text
    assert "const %empty : f32[0,3] = []" in text
    assert ('%/conv1/Conv_output_0 = conv(%/quant/QuantizeLinear_output_0, %"onnx::Conv_12", '
            '%conv1.bias) {strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, '
            'clamp=[-128, 127]} : i8[1,2,4,4] q<scale=0.05, zp=-128> loc("/conv1/Conv")') in text
    assert ('%"a b", %"quote\\"d" = split(%/conv1/Conv_output_0) {axis=1, ratio=0.1, '
            'mode="even\\n", flag=true, off=false, sizes=[1, 1], weights=[0.5, -2.0], none=[]} '
            ': i8[1,1,4,4] q<scale=0.05, zp=-128>, i8[1,1,4,4] q<scale=0.05, zp=-128> '
            'loc("split")\n') in text


def test_op_named_after_its_result_prints_without_loc() -> None:
    m = Module()
    m.add_input("x", TensorType((2,), "f32"))
    m.add_op("relu", ["x"], [TensorType((2,), "f32")])  # named "relu", result "relu"
    m.outputs.append("relu")
    assert "  %relu = relu(%x) : f32[2]\n" in round_trip(m)


def test_op_name_clashing_with_another_value_survives() -> None:
    m = Module()
    m.add_input("x", TensorType((2,), "f32"))
    a = m.add_op("relu", ["x"], [TensorType((2,), "f32")], name="b", outputs=["a"])
    m.add_op("relu", [a.outputs[0]], [TensorType((2,), "f32")], name="c", outputs=["b"])
    m.outputs.append("b")
    text = round_trip(m)
    assert '%a = relu(%x) : f32[2] loc("b")' in text


def test_float32_constants_are_bit_exact() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal(16).astype(np.float32) * np.float32(1e-3)
    special = np.array([np.inf, -np.inf, np.nan, -0.0, 1e-45, 3.4028235e38], dtype=np.float32)
    m = Module()
    m.add_constant("small", values)
    m.add_constant("special", special)
    m.add_constant("big", rng.standard_normal((5, 7)).astype(np.float32))
    m.add_constant("neg_zero", np.full(3, -0.0, dtype=np.float32))
    text = round_trip(m)
    assert "= [inf, -inf, nan, -0.0, 1e-45, 3.4028235e+38]" in text
    assert "const %neg_zero : f32[3] = splat(-0.0)" in text
    assert "const %small : f32[16] = [0.00012573022, -0.00013210486, " in text  # float32 digits


def test_nan_with_payload_falls_back_to_base64() -> None:
    m = Module()
    m.add_constant("odd_nan", np.array([0x7FC00001], dtype=np.uint32).view(np.float32))
    assert 'const %odd_nan : f32[1] = base64"AQDAfw=="' in round_trip(m)


def test_elided_constants_parse_as_zeros() -> None:
    m = Module()
    m.add_constant("w", np.arange(100, dtype=np.int8))
    m.add_constant("b", np.array([1, 2], dtype=np.int32))
    text = print_module(m, elide_constants=True)
    assert "const %w : i8[100] = elided\n" in text
    assert "const %b : i32[2] = [1, 2]\n" in text
    parsed = parse_module(text)
    assert not parsed.constants["w"].any() and parsed.constants["w"].dtype == np.int8
    assert "const %w : i8[100] = splat(0)\n" in print_module(parsed)


def test_numpy_attribute_values_print_like_python_ones() -> None:
    m = Module()
    m.add_input("x", TensorType((2,), "f32"))
    m.add_op("clip", ["x"], [TensorType((2,), "f32")],
             attrs={"min": np.float32(0.5), "max": np.int64(6), "on": np.bool_(True)})
    assert "{min=0.5, max=6, on=true}" in print_module(m)


def big_module() -> Module:
    """~25M weights (about 100 MB of f32 as text) over 160 ops, as large as ResNet-50."""
    rng = np.random.default_rng(1)
    m = Module("big")
    m.add_input("x", TensorType((1, 64), "f32"))
    prev = "x"
    block = rng.standard_normal(160_000).astype(np.float32)  # 0.6 MB per weight
    for i in range(160):
        w = m.add_constant(f"w{i}", np.roll(block, i).reshape(2500, 64))
        op = m.add_op("gemm", [prev, w], [TensorType((1, 64), "f32")], name=f"/layer{i}/Gemm",
                      outputs=[f"/layer{i}/Gemm_output_0"])
        prev = op.outputs[0]
    m.outputs.append(prev)
    return m


def test_a_resnet50_sized_module_round_trips() -> None:
    """Its speed is a figure of `make bench` (bench/frontend.py), not a timed test."""
    m = big_module()
    text = print_module(m)
    assert len(text) > 100_000_000
    parsed = parse_module(text)
    assert np.array_equal(parsed.constants["w159"], m.constants["w159"])


# ---- property test over random modules -----------------------------------

NAMES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["gpu_0/data_0", "/conv1/Conv_output_0", "onnx::Conv_12", "a//b", "x", "",
                     "input", "true", "%", "@", "-1", "1.5", "a\u2028b", "é"]),
)
FLOATS = st.floats(width=64, allow_nan=True, allow_infinity=True)
ATTRS = st.one_of(
    st.integers(-(2**70), 2**70), FLOATS, st.text(max_size=5), st.booleans(),
    st.lists(st.integers(-5, 2**40), max_size=4), st.lists(FLOATS, max_size=4),
)


@st.composite
def tensor_types(draw: st.DrawFn) -> TensorType:
    dtype = draw(st.sampled_from(list(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    quant = None
    if dtype in ("i8", "u8", "i32") and draw(st.booleans()):
        scale = st.floats(1e-8, 1e3)
        axes = [a for a, d in enumerate(shape) if d > 0]
        if axes and draw(st.booleans()):
            axis = draw(st.sampled_from(axes))
            n = shape[axis]
            quant = Quant(tuple(draw(st.lists(scale, min_size=n, max_size=n))),
                          tuple(draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n))),
                          axis)
        else:
            quant = Quant((draw(scale),), (draw(st.integers(-128, 255)),))
    return TensorType(shape, dtype, quant)


@st.composite
def constant_arrays(draw: st.DrawFn, type_: TensorType) -> np.ndarray:
    dtype = type_.numpy_dtype
    if draw(st.booleans()):  # all equal: splat
        value = draw(hnp.from_dtype(dtype))
        return np.full(type_.shape, value, dtype=dtype)
    return draw(hnp.arrays(dtype, type_.shape))


@st.composite
def modules(draw: st.DrawFn) -> Module:
    names = draw(st.lists(NAMES, min_size=1, max_size=12, unique=True))
    m = Module(draw(NAMES))
    defined: list[str] = []
    i = 0
    while i < len(names):
        role = draw(st.sampled_from(["input", "const", "op"]))
        if role == "input":
            defined.append(m.add_input(names[i], draw(tensor_types())))
            i += 1
        elif role == "const":
            type_ = draw(tensor_types())
            m.add_constant(names[i], draw(constant_arrays(type_)), type_.quant)
            defined.append(names[i])
            i += 1
        else:
            outputs = names[i:i + draw(st.integers(1, 2))]
            i += len(outputs)
            operands = draw(st.lists(st.sampled_from(defined), max_size=3)) if defined else []
            op_name = draw(st.one_of(st.just(outputs[0]), NAMES))
            if op_name in m.graph:
                op_name = outputs[0]
            m.add_op(draw(st.sampled_from(["conv", "relu", "odd kind", "const", "x.y"])),
                     operands, [draw(tensor_types()) for _ in outputs], name=op_name,
                     outputs=outputs, attrs=draw(st.dictionaries(NAMES, ATTRS, max_size=3)))
            defined += outputs
    m.outputs = draw(st.lists(st.sampled_from(defined), max_size=2))
    return m


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modules())
def test_random_modules_round_trip(module: Module) -> None:
    round_trip(module)


# ---- errors ----------------------------------------------------------------

def error_of(text: str) -> str:
    with pytest.raises(CimcError) as info:
        parse_module(text, "m.cir", verify=True)
    return str(info.value)


def test_syntax_error_points_at_the_token() -> None:
    text = "module @m {\n  input %x : f32[2]\n  %y = relu(%x : f32[2]\n}\n"
    assert error_of(text) == (
        "m.cir:3:16: error: unexpected ':', expected one of: ')', ','\n"
        "  %y = relu(%x : f32[2]\n"
        "               ^")


def test_unexpected_character_is_named() -> None:
    assert error_of("module @m {\n  input %x : f32[2] $\n}").startswith(
        "m.cir:2:21: error: unexpected character '$'")


def test_end_of_input_is_reported() -> None:
    assert error_of("module @m {\n  input %x : f32[2]\n").startswith(
        "m.cir:3:1: error: unexpected end of input, expected one of:")


def test_undefined_value_is_located() -> None:
    text = "module @m {\n  input %x : f32[2]\n  %y = relu(%z) : f32[2]\n  output %y\n}\n"
    assert error_of(text) == (
        "m.cir:3:13: error: use of undefined value %z\n"
        "  %y = relu(%z) : f32[2]\n"
        "            ^")


def test_redefined_value_names_the_first_definition() -> None:
    text = "module @m {\n  input %x : f32[2]\n  %x = relu(%x) : f32[2]\n}\n"
    assert error_of(text).startswith(
        "m.cir:3:3: error: value %x is already defined on line 2")


def test_constant_literal_must_match_its_type() -> None:
    text = "module @m {\n  const %c : i32[2,2] = [1, 2, 3]\n}\n"
    assert error_of(text) == (
        "m.cir:2:25: error: constant has 3 elements but its type i32[2,2] has 4\n"
        "  const %c : i32[2,2] = [1, 2, 3]\n"
        "                        ^")


@pytest.mark.parametrize(("line", "message"), [
    ("const %c : f16[2] = [1, 2]",
     "2:14: error: unknown element type 'f16'; valid types: f32, i8, u8, i16, u16, i32, u32, "
     "i64, u64, bool"),
    ("const %c : i8[2] = [1, 300]", "2:26: error: 300 is out of range for i8 [-128, 127]"),
    ("const %c : i8[2] = [1, 2.5]", "2:26: error: expected an integer, got '2.5'"),
    ("const %c : bool[1] = [1]", "2:25: error: expected true or false, got '1'"),
    ('const %c : i32[2] = base64"AAAA"',
     "2:23: error: base64 data has 3 bytes but i32[2] needs 8"),
    ("const %c : f32[1] = [1e39]", "2:24: error: 1e39 is out of range for f32"),
    ("input %x : i8[2] q<scale=[0.5], zp=[0]>",
     "2:20: error: per-tensor scale and zp are single numbers"),
    ("input %x : i8[2] q<scale=0.5>", "2:20: error: quantization needs both scale=... and zp=..."),
    ("input %x : i8[2] q<scale=0.5, zp=0, bits=8>",
     "2:39: error: unknown quantization field 'bits'; valid: axis, scale, zp"),
    ('%y = relu() : f32[1] loc("a")\n  %z = relu() : f32[1] loc("a")',
     '3:24: error: op name "a" is used twice'),
    ("%y, %z = relu() : f32[1]", "2:3: error: op has 2 results but 1 types"),
    ("%y = relu() {a=1, a=2} : f32[1]", "2:21: error: attribute 'a' given twice"),
])
def test_semantic_errors_are_located(line: str, message: str) -> None:
    assert error_of(f"module @m {{\n  {line}\n}}\n").startswith(f"m.cir:{message}")


def test_text_after_the_module_is_an_error() -> None:
    assert error_of("module @m {\n}\nfoo\n").startswith(
        "m.cir:3:1: error: unexpected 'foo', expected end of input")


VALID = """module @m {
  input %x : f32[1,1,4,4]
  const %w : i8[2,1,3,3] q<axis=0, scale=[0.01, 0.02], zp=[0, 0]> = base64"AQIDBAUGBwgJCgsMDQ4PEBES"
  const %b : i32[2] q<axis=0, scale=[0.0001, 0.0002], zp=[0, 0]> = [12, -3]
  %xq = quantize(%x) : i8[1,1,4,4] q<scale=0.0078125, zp=0> loc("x_q")
  %y = conv(%xq, %w, %b) {strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1} \
: i8[1,2,4,4] q<scale=0.05, zp=-128> loc("conv1")
  %z = clip(%y) {min=0.0, max=6.0} : i8[1,2,4,4] q<scale=0.05, zp=-128>
  output %z
}
"""


def test_valid_text_verifies() -> None:
    assert print_module(parse_module(VALID, verify=True)) == VALID


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_damaged_text_gives_a_located_error_or_a_module(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from([VALID, print_module(onnx_like_module())]))
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 8)))
    damaged = text[:start] + data.draw(st.text(max_size=3)) + text[end:]
    try:
        parse_module(damaged, "m.cir", verify=data.draw(st.booleans()))
    except CimcError as exc:
        assert str(exc).startswith("m.cir:")  # located, never a bare message


def test_verifier_errors_point_at_the_op() -> None:
    text = "module @m {\n  input %x : f32[2]\n  %y = relu(%x, %x) : f32[2]\n  output %y\n}\n"
    assert error_of(text) == (
        "m.cir:3:3: error: op 'y' (relu): expected 1 operands, got 2\n"
        "  %y = relu(%x, %x) : f32[2]\n"
        "  ^")


def test_parse_without_verify_accepts_unknown_kinds() -> None:
    m = parse_module("module @m {\n  %y = mystery() : f32[1]\n  output %y\n}\n")
    assert next(m.ops()).kind == "mystery"
