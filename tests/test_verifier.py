"""The verifier: a well-formed module passes, each kind of damage is named."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Quant, TensorType
from cimc.ir.verifier import OP_KINDS, verify

I8 = TensorType((1, 2, 4, 4), "i8", Quant((0.05,), (-128,)))


def lenet_block() -> Module:
    """quantize -> conv -> max_pool -> reshape -> gemm -> dequantize, all valid."""
    m = Module("block")
    m.add_input("x", TensorType((1, 1, 4, 4), "f32"))
    w = m.add_constant("w", np.ones((2, 1, 3, 3), dtype=np.int8), Quant((0.1, 0.2), (0, 0), 0))
    b = m.add_constant("b", np.zeros(2, dtype=np.int32), Quant((1e-3, 2e-3), (0, 0), 0))
    fc_w = m.add_constant("fc_w", np.ones((3, 8), dtype=np.int8), Quant((0.1,), (0,)))
    xq = m.add_op("quantize", ["x"], [TensorType((1, 1, 4, 4), "i8", Quant((0.01,), (0,)))])
    conv = m.add_op("conv", [xq.outputs[0], w, b], [I8], name="conv1",
                    attrs={"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1],
                           "group": 1, "clamp": [-128, 127]})
    pool = m.add_op("max_pool", conv.outputs, [I8.with_shape((1, 2, 2, 2))], name="pool",
                    attrs={"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0],
                           "dilations": [1, 1], "ceil_mode": False})
    flat = m.add_op("reshape", pool.outputs, [I8.with_shape((1, 8))], attrs={"shape": [1, 8]})
    fc = m.add_op("gemm", [flat.outputs[0], fc_w], [I8.with_shape((1, 3))], name="fc")
    y = m.add_op("dequantize", fc.outputs, [TensorType((1, 3), "f32")])
    m.outputs.append(y.outputs[0])
    return m


def test_well_formed_module_passes() -> None:
    verify(lenet_block())


def break_by(damage: Callable[[Module], None]) -> str:
    m = lenet_block()
    damage(m)
    with pytest.raises(CimcError) as info:
        verify(m)
    return info.value.message


def test_unknown_kind_lists_the_kinds() -> None:
    def damage(m: Module) -> None:
        m.op("pool").kind = "maxpool"
    message = break_by(damage)
    assert message.startswith("op 'pool' (maxpool): unknown op kind; valid kinds: add, avg_pool,")
    assert "max_pool" in message


def test_wrong_operand_count() -> None:
    assert break_by(lambda m: m.set_inputs(m.op("fc"), ["reshape"])) == (
        "op 'fc' (gemm): expected 2 to 3 operands, got 1")


def test_missing_attribute() -> None:
    assert break_by(lambda m: m.op("conv1").attrs.pop("group")) == (
        "op 'conv1' (conv): missing attribute 'group' (an int)")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("strides", [1], "must be a list of 2 ints, got [1]"),
    ("group", 1.0, "must be an int, got 1.0"),
    ("group", True, "must be an int, got True"),
    ("pads", [1, 1, 1, 0.5], "must be a list of 4 ints, got [1, 1, 1, 0.5]"),
])
def test_ill_typed_attribute(key: str, value: object, expected: str) -> None:
    def damage(m: Module) -> None:
        m.op("conv1").attrs[key] = value
    assert break_by(damage) == f"op 'conv1' (conv): attribute '{key}' {expected}"


def test_unknown_attribute_lists_allowed_ones() -> None:
    def damage(m: Module) -> None:
        m.op("pool").attrs["stride"] = [2, 2]
    assert break_by(damage) == (
        "op 'pool' (max_pool): unknown attribute 'stride'; allowed: ceil_mode, dilations, kernel, "
        "pads, strides")


def test_undefined_operand() -> None:
    assert break_by(lambda m: m.set_inputs(m.op("fc"), ["reshape", "ghost"])) == (
        "op 'fc' (gemm): operand %ghost is not defined")


def test_value_defined_twice() -> None:
    assert break_by(lambda m: m.inputs.append("w")) == (
        "value %w is defined twice (the second time by a constant)")


def test_cycle_is_found() -> None:
    assert break_by(lambda m: m.set_inputs(m.op("quantize"), ["fc"])).startswith(
        "the graph has a cycle: ")


def test_undefined_module_output() -> None:
    assert break_by(lambda m: m.outputs.append("nothing")) == (
        "module output %nothing is not defined")


def test_constant_data_must_match_type() -> None:
    def damage(m: Module) -> None:
        m.constants["b"] = np.zeros(2, dtype=np.int64)
    assert break_by(damage) == "constant %b has data int64[2] but type i32[2]"


def test_operand_list_edited_behind_the_graph() -> None:
    def damage(m: Module) -> None:
        m.op("fc").inputs[0] = "pool"  # not through set_inputs: edges are stale
    assert break_by(damage) == (
        "op 'fc' reads %pool from op 'pool' but the graph has no such edge")


def test_value_without_definition() -> None:
    def damage(m: Module) -> None:
        m.values["stray"] = TensorType((1,), "f32")
    assert break_by(damage) == "value %stray has a type but nothing defines it"


def test_per_axis_quantization_must_match_channels() -> None:
    def damage(m: Module) -> None:
        m.values["w"] = TensorType((2, 1, 3, 3), "i8", Quant((0.1, 0.2, 0.3), (0, 0, 0), 0))
    assert break_by(damage) == "value %w: 3 scales for 2 channels along axis 0"


def test_every_documented_kind_is_in_the_table() -> None:
    documented = ["conv", "gemm", "matmul", "add", "sub", "mul", "relu", "clip", "sigmoid",
                  "tanh", "softmax", "lrn", "batch_norm", "max_pool", "avg_pool",
                  "global_avg_pool", "global_max_pool", "reduce_mean", "concat", "reshape",
                  "transpose", "quantize", "dequantize", "requantize"]
    assert [k for k in documented if k not in OP_KINDS] == []
