"""lower and the code it leads to, op by op: small integer modules built with
the IR API, compiled for a target, simulated, and compared with the reference
interpreter bit for bit (convolution variants, pools, add/sub, activations,
requantize, concat), plus the errors lower reports."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import cimc
from cimc.diagnostics import CimcError
from cimc.dialect.host import host_float_ops
from cimc.host.ports import reference_codes
from cimc.ir.module import Module, Quant, TensorType
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image
from cimc.isa.simulator import run_program
from cimc.passes.lower import Lower
from cimc.reference.requant import fixed_point
from cimc.targets import load_target


def q(scale: float, zp: int) -> Quant:
    return Quant((scale,), (zp,))


def per_channel(scales: np.ndarray) -> Quant:
    return Quant(tuple(float(s) for s in scales), (0,) * len(scales), 0)


class Builder:
    """A module with a quantized image input, grown op by op."""

    def __init__(self, shape: tuple[int, ...], dtype: str = "i8", seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.m = Module("unit")
        self.m.add_input("x", TensorType(shape, "f32"))
        self.zero = 0 if dtype == "i8" else 128
        self.dtype = dtype
        self.x = self.op("quantize", ["x"], shape, 0.05, self.zero)

    def op(self, kind: str, inputs: list[str], shape: tuple[int, ...], scale: float, zp: int,
           **attrs: object) -> str:
        ty = TensorType(shape, self.dtype, q(scale, zp))
        return self.m.add_op(kind, inputs, [ty], attrs=dict(attrs)).outputs[0]

    def conv(self, x: str, cout: int, k: int, shape: tuple[int, ...], group: int = 1,
             **attrs: object) -> str:
        cin = self.m.values[x].shape[1]
        w = self.m.add_constant(self.m.fresh_name("w"), self.rng.integers(
            -127, 128, (cout, cin // group, k, k)).astype(np.int8),
            per_channel(self.rng.uniform(0.002, 0.01, cout)))
        b = self.m.add_constant(self.m.fresh_name("b"),
                                self.rng.integers(-300, 300, cout).astype(np.int32))
        return self.op("conv", [x, w, b], shape, 0.08, self.zero, group=group, **attrs)

    def finish(self, y: str) -> Module:
        out = self.m.add_op("dequantize", [y], [TensorType(self.m.values[y].shape, "f32")],
                            name="y").outputs[0]
        self.m.outputs.append(out)
        return self.m


def check(module: Module, target: str, tmp_path: Path, samples: int = 3) -> Module:
    """Compile with the backend pipeline, simulate, assert equality with the reference."""
    integer = copy.deepcopy(module)
    prog = tmp_path / "prog.s"
    program = cimc.compile(module, target, path=prog)
    program.save(prog)
    shape = integer.values["x"].shape
    x = np.random.default_rng(7).standard_normal((samples, *shape[1:])).astype(np.float32)
    inputs, expected = reference_codes(integer, {"x": x})
    got, _ = run_program(assemble_file(prog), load_image(prog.with_suffix(".img")),
                         load_target(target), inputs)
    np.testing.assert_array_equal(got["y"], expected["y"])
    return program.module


CONVS = [  # (stride, pads top/left/bottom/right, dilation, group, kernel)
    (1, [1, 1, 1, 1], 1, 1, 3),
    (2, [0, 1, 2, 0], 1, 1, 3),
    (1, [2, 2, 2, 2], 2, 1, 3),
    (2, [1, 1, 1, 1], 1, 2, 3),
    (1, [1, 1, 1, 1], 2, 4, 3),
    (1, [0, 0, 0, 0], 1, 1, 1),
    (3, [0, 0, 0, 0], 1, 1, 1),
]


def _out(size: int, k: int, stride: int, before: int, after: int, dilation: int) -> int:
    return (size + before + after - dilation * (k - 1) - 1) // stride + 1


@pytest.mark.parametrize(("stride", "pads", "dilation", "group", "k"), CONVS)
@pytest.mark.parametrize(("target", "dtype"), [("tiny", "i8"), ("isaac", "u8")])
def test_conv_variants_equal_reference(stride: int, pads: list[int], dilation: int, group: int,
                                       k: int, target: str, dtype: str, tmp_path: Path) -> None:
    b = Builder((1, 4, 7, 6), dtype)
    oh = _out(7, k, stride, pads[0], pads[2], dilation)
    ow = _out(6, k, stride, pads[1], pads[3], dilation)
    y = b.conv(b.x, 8, k, (1, 8, oh, ow), group=group, strides=[stride, stride], pads=pads,
               dilations=[dilation, dilation])
    check(b.finish(y), target, tmp_path)


def test_depthwise_conv_is_block_diagonal_and_exact(tmp_path: Path) -> None:
    b = Builder((1, 6, 5, 5))
    y = b.conv(b.x, 6, 3, (1, 6, 5, 5), group=6, strides=[1, 1], pads=[1, 1, 1, 1],
               dilations=[1, 1])
    module = check(b.finish(y), "isaac", tmp_path)
    weights = next(v for k, v in module.constants.items() if k.endswith(".weights"))
    assert weights.shape == (54, 6)
    for c in range(6):  # rows of group c hold only column c
        assert not weights[c * 9:(c + 1) * 9, np.arange(6) != c].any()


@pytest.mark.parametrize("dtype", ["i8", "u8"])
def test_pools_add_sub_activations_equal_reference(dtype: str, tmp_path: Path) -> None:
    b = Builder((1, 3, 9, 9), dtype)
    z = b.zero
    low = -128 if dtype == "i8" else 0
    c = b.conv(b.x, 4, 3, (1, 4, 9, 9), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1])
    m = b.op("max_pool", [c], (1, 4, 5, 5), 0.08, z, kernel=[3, 3], strides=[2, 2],
             pads=[1, 1, 1, 1], dilations=[1, 1], ceil_mode=0)
    a = b.op("avg_pool", [c], (1, 4, 5, 5), 0.05, z, kernel=[3, 3], strides=[2, 2],
             pads=[1, 1, 1, 1], ceil_mode=0, count_include_pad=1)
    r = b.op("relu", [a], (1, 4, 5, 5), 0.05, z)
    s = b.op("add", [m, r], (1, 4, 5, 5), 0.1, z)
    d = b.op("sub", [s, m], (1, 4, 5, 5), 0.07, z)
    k = b.op("clip", [d], (1, 4, 5, 5), 0.07, z, min=-0.5, max=1.0)
    g = b.op("global_avg_pool", [k], (1, 4, 1, 1), 0.02, z)
    h = b.op("requantize", [g], (1, 4, 1, 1), 0.03, low + 10)
    check(b.finish(h), "tiny", tmp_path)


def test_concat_and_requantizing_max_pool_equal_reference(tmp_path: Path) -> None:
    b = Builder((1, 2, 6, 6))
    c1 = b.conv(b.x, 3, 3, (1, 3, 6, 6), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1])
    c2 = b.conv(b.x, 5, 1, (1, 5, 6, 6), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
    both = b.op("concat", [c1, c2], (1, 8, 6, 6), 0.08, 0, axis=1)
    p = b.op("max_pool", [both], (1, 8, 3, 3), 0.11, 5, kernel=[2, 2], strides=[2, 2],
             pads=[0, 0, 0, 0], dilations=[1, 1], ceil_mode=0)
    module = check(b.finish(p), "isaac", tmp_path)
    assert [op.kind for op in module.ops()].count("rescale") == 1


@pytest.mark.parametrize("target", ["tiny", "isaac"])
def test_concat_of_differently_quantized_operands_rescales_each_to_the_result(
        target: str, tmp_path: Path) -> None:
    """The reference requantizes each concat operand to the result's quantization; the
    chip does too (a coarse operand may saturate), not only copy its codes."""
    b = Builder((1, 2, 6, 6))
    c1 = b.conv(b.x, 3, 3, (1, 3, 6, 6), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1])
    c2 = b.conv(b.x, 5, 1, (1, 5, 6, 6), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
    c3 = b.op("requantize", [c1], (1, 3, 6, 6), 0.3, 7)
    both = b.op("concat", [c2, c3, c1], (1, 11, 6, 6), 0.03, -4, axis=1)
    module = check(b.finish(both), target, tmp_path)
    assert [op.kind for op in module.ops()].count("rescale") == 4  # requantize, 3 operands


def _reshape(b: Builder, x: str, shape: tuple[int, ...], quant: Quant) -> str:
    ty = TensorType(shape, b.dtype, quant)
    return b.m.add_op("reshape", [x], [ty], attrs={"shape": list(shape)}).outputs[0]


@pytest.mark.parametrize("target", ["tiny", "isaac"])
def test_requantizing_flatten_before_a_gemm_equals_reference(target: str,
                                                              tmp_path: Path) -> None:
    """A reshape whose result is quantized unlike its operand (a QDQ pair of another
    scale between a pool and a flatten) requantizes in the reference; the gemm that
    reads the image through it took the image's codes as they were."""
    b = Builder((1, 2, 4, 4))
    c = b.conv(b.x, 3, 3, (1, 3, 4, 4), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1])
    flat = _reshape(b, c, (1, 48), q(0.2, 9))
    w = b.m.add_constant("fc", b.rng.integers(-127, 128, (5, 48)).astype(np.int8),
                         per_channel(b.rng.uniform(0.002, 0.01, 5)))
    y = b.op("gemm", [flat, w], (1, 5), 0.1, -3)
    module = check(b.finish(y), target, tmp_path)
    assert [op.kind for op in module.ops()].count("rescale") == 1


def test_requantizing_reshape_of_a_vector_equals_reference(tmp_path: Path) -> None:
    b = Builder((1, 6, 1, 1))
    c = b.conv(b.x, 4, 1, (1, 4, 1, 1), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
    flat = _reshape(b, c, (1, 4), q(0.3, -20))
    check(b.finish(flat), "tiny", tmp_path)


@pytest.mark.parametrize("kind", ["requantize", "concat"])
def test_a_requantization_whose_multiplier_underflows_gives_the_zero_point(
        kind: str, tmp_path: Path) -> None:
    """Operand scale 1e-30 against result scale 0.05: the fixed-point multiplier rounds
    to M = 0, which the code generator read as 'clamp only' and passed the codes on;
    the reference (and the real arithmetic) gives the result's zero point."""
    b = Builder((1, 2, 3, 3))
    b.m.remove_op(b.m.producer(b.x))  # type: ignore[arg-type]
    tiny = b.op("quantize", ["x"], (1, 2, 3, 3), 1e-30, 3)
    if kind == "concat":
        c = b.conv(tiny, 2, 1, (1, 2, 3, 3), strides=[1, 1], pads=[0, 0, 0, 0],
                   dilations=[1, 1])
        y = b.op("concat", [c, tiny], (1, 4, 3, 3), 0.05, -7, axis=1)
    else:
        y = b.op("requantize", [tiny], (1, 2, 3, 3), 0.05, -7)
    check(b.finish(y), "tiny", tmp_path)


def test_int32_overflow_whose_result_would_vary_is_reported() -> None:
    """A gemm with a huge bias and a tiny requantization multiplier: the reference's
    saturated accumulator still reaches several result codes, the chip would wrap."""
    m = Module("wide")
    m.add_input("x", TensorType((1, 1024), "f32"))
    x = m.add_op("quantize", ["x"], [TensorType((1, 1024), "i8", q(0.05, 0))]).outputs[0]
    w = m.add_constant("w", np.full((2, 1024), 127, np.int8), per_channel(np.full(2, 0.005)))
    b = m.add_constant("b", np.array([0, 2**31 - 1], np.int32))
    y = m.add_op("gemm", [x, w, b], [TensorType((1, 2), "i8", q(5000.0, 0))],
                 name="fc").outputs[0]
    m.outputs.append(m.add_op("dequantize", [y], [TensorType((1, 2), "f32")]).outputs[0])
    with pytest.raises(CimcError, match=r"op 'fc' \(gemm\): the int32 accumulator of output "
                                        r"channel 1 overflows"):
        Lower().apply(m)


def test_float_op_between_chip_layers_is_reported_not_left_to_the_host() -> None:
    b = Builder((1, 2, 4, 4))
    c = b.conv(b.x, 3, 1, (1, 3, 4, 4), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
    f = b.m.add_op("dequantize", [c], [TensorType((1, 3, 4, 4), "f32")]).outputs[0]
    t = b.m.add_op("tanh", [f], [TensorType((1, 3, 4, 4), "f32")], name="act").outputs[0]
    y = b.op("quantize", [t], (1, 3, 4, 4), 0.01, 0)
    module = b.finish(b.conv(y, 2, 1, (1, 2, 4, 4), strides=[1, 1], pads=[0, 0, 0, 0],
                             dilations=[1, 1]))
    assert host_float_ops(module) == set()
    with pytest.raises(CimcError, match=r"op 'act' \(tanh\) computes in float between integer "
                                        r"layers"):
        Lower().apply(module)


def _twice_quantized_input(scale: float, zp: int) -> Module:
    """x quantized by the Builder and once more with (scale, zp), each copy convolved."""
    b = Builder((1, 2, 4, 4))
    x2 = b.m.add_op("quantize", ["x"], [TensorType((1, 2, 4, 4), "i8", q(scale, zp))],
                    name="again").outputs[0]
    c1 = b.conv(b.x, 3, 1, (1, 3, 4, 4), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
    c2 = b.conv(x2, 3, 1, (1, 3, 4, 4), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
    return b.finish(b.op("add", [c1, c2], (1, 3, 4, 4), 0.1, 0))


def test_an_input_quantized_twice_differently_is_reported() -> None:
    """The program has one .input port per model input; two would share its name."""
    with pytest.raises(CimcError, match=r"model input 'x' is quantized twice, differently: "
                                        r"'quantize' \(scale 0.05, zero point 0\), 'again'"):
        Lower().apply(_twice_quantized_input(0.11, 3))


def test_an_input_quantized_twice_alike_reads_one_copy(tmp_path: Path) -> None:
    module = check(_twice_quantized_input(0.05, 0), "tiny", tmp_path)
    assert [op.kind for op in module.ops()].count("quantize") == 1


VARYING_POOLS = [  # (input, result, kernel, strides, pads, ceil_mode, count_include_pad)
    ((1, 2, 4, 4), (1, 2, 3, 3), [2, 2], [2, 2], [1, 1, 1, 1], 0, 0),
    ((1, 3, 7, 6), (1, 3, 4, 3), [3, 3], [2, 2], [1, 1, 1, 1], 0, 0),  # ShuffleNet's
    ((1, 2, 3, 3), (1, 2, 2, 2), [2, 2], [2, 2], [0, 0, 0, 0], 1, 0),
    ((1, 2, 3, 3), (1, 2, 2, 2), [2, 2], [2, 2], [0, 0, 0, 0], 1, 1),
    ((1, 2, 6, 6), (1, 2, 4, 3), [3, 3], [2, 2], [1, 0, 1, 0], 1, 1),
]


@pytest.mark.parametrize("target", ["tiny", "isaac"])
@pytest.mark.parametrize("pool", VARYING_POOLS)
def test_average_pools_whose_windows_count_different_positions_equal_the_reference(
        pool: tuple, target: str, tmp_path: Path) -> None:
    """Without count_include_pad, or with ceil_mode windows past the pads, onnxruntime
    divides each window by the positions it covers: one requantization table per divisor,
    a pixel loop per run of equal divisors."""
    shape, out, kernel, strides, pads, ceil, include = pool
    b = Builder(shape)
    y = b.op("avg_pool", [b.x], out, 0.05, 0, kernel=kernel, strides=strides, pads=pads,
             ceil_mode=ceil, count_include_pad=include)
    module = check(b.finish(y), target, tmp_path)
    pool_op = next(op for op in module.ops() if op.kind == "pool")
    assert len(pool_op.attrs["divisors"]) > 1
def test_padded_average_pool_gets_a_multiplier_per_divisor() -> None:
    """count_include_pad=0 with pads: the border windows of a 4x4 image (2x2 windows,
    stride 2, pads 1) cover 1, 2 or 4 input positions; each divisor has its multiplier."""
    b = Builder((1, 2, 4, 4))
    y = b.op("avg_pool", [b.x], (1, 2, 3, 3), 0.05, 0, kernel=[2, 2], strides=[2, 2],
             pads=[1, 1, 1, 1], ceil_mode=0, count_include_pad=0)
    m = b.finish(y)
    sx = m.values[b.x].quant.scale[0]
    Lower().apply(m)
    pool = next(op for op in m.ops() if op.kind == "pool")
    assert pool.attrs["row_extents"] == pool.attrs["col_extents"] == [1, 2, 1]
    assert pool.attrs["divisors"] == [1, 2, 4]
    for d, mant, shift in zip([1, 2, 4], pool.attrs["divisor_M"], pool.attrs["divisor_shift"],
                              strict=True):
        assert (mant, shift) == tuple(int(v) for v in fixed_point(np.float64(sx) / (0.05 * d)))


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_whose_ceil_mode_windows_run_past_the_input_divides_by_what_they_cover(
        count_include_pad: int) -> None:
    """onnxruntime divides such a window by the positions it covers (the pads count with
    count_include_pad, positions past them never): 3x3 image, 2x2 windows, stride 2."""
    b = Builder((1, 2, 3, 3))
    y = b.op("avg_pool", [b.x], (1, 2, 2, 2), 0.05, 0, kernel=[2, 2], strides=[2, 2],
             pads=[0, 0, 0, 0], ceil_mode=1, count_include_pad=count_include_pad)
    m = b.finish(y)
    Lower().apply(m)
    pool = next(op for op in m.ops() if op.kind == "pool")
    assert pool.attrs["row_extents"] == pool.attrs["col_extents"] == [2, 1]
    assert pool.attrs["divisors"] == [1, 2, 4]


def test_requantizing_max_pool_with_a_window_wholly_in_padding_is_reported() -> None:
    b = Builder((1, 2, 1, 4))
    y = b.op("max_pool", [b.x], (1, 2, 1, 2), 0.07, 0, kernel=[2, 1], strides=[2, 2],
             pads=[1, 0, 1, 0], dilations=[2, 2], ceil_mode=0)
    with pytest.raises(CimcError, match="a window lies wholly in the padding"):
        Lower().apply(b.finish(y))


def test_asymmetric_weights_are_reported() -> None:
    b = Builder((1, 1, 4, 4))
    w = b.m.add_constant("w", np.ones((2, 1, 1, 1), np.int8), Quant((0.1, 0.1), (3, 0), 0))
    y = b.op("conv", [b.x, w], (1, 2, 4, 4), 0.1, 0, strides=[1, 1], pads=[0, 0, 0, 0],
             dilations=[1, 1], group=1)
    with pytest.raises(CimcError, match="symmetrically"):
        Lower().apply(b.finish(y))


def test_float_op_on_the_chip_is_reported() -> None:
    m = Module("float")
    m.add_input("x", TensorType((1, 4), "f32"))
    y = m.add_op("sigmoid", ["x"], [TensorType((1, 4), "f32")], name="act").outputs[0]
    m.outputs.append(y)
    with pytest.raises(CimcError, match=r"op 'act' \(sigmoid\): the chip has no sigmoid"):
        Lower().apply(m)
