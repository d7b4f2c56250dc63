"""Random small quantized graphs for the differential fuzzer (tests/test_fuzz.py).

Two ways to make a model, both ending in an ONNX file:

* `QdqBuilder` writes a QDQ graph directly with onnx.helper: every activation
  goes through QuantizeLinear -> DequantizeLinear with parameters the caller
  picks, weights are int8 constants behind a per-channel DequantizeLinear,
  biases int32 constants in the accumulator scale. This reaches parameters
  onnxruntime's quantizer never chooses (extreme scales and zero points,
  biases near the int32 limits, weight code -128).
* `FloatBuilder` writes the same kinds of layers in float, for
  `models.quantize_qdq` (onnxruntime's quantize_static, per-channel QDQ).

The hypothesis strategies at the bottom draw a `Case`: a model file, seeded
float inputs and a one-line description of its layers for failure messages.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
INT32 = (-(2**31), 2**31 - 1)

# Extreme quantization reaches requantization multipliers up to 2^MAX_LOG2_MULTIPLIER,
# past what the fixed-point form holds (2^31): cimc must refuse those clearly.
MAX_LOG2_MULTIPLIER = 40


@dataclass(frozen=True)
class Quant:
    """Per-tensor activation quantization."""

    scale: float
    zp: int
    signed: bool

    @property
    def onnx_type(self) -> int:
        return TensorProto.INT8 if self.signed else TensorProto.UINT8

    @property
    def numpy_type(self) -> type:
        return np.int8 if self.signed else np.uint8


@dataclass
class Tensor:
    name: str  # a float tensor (the DequantizeLinear output in QDQ graphs)
    shape: tuple[int, ...]
    quant: Quant | None = None


@dataclass
class Graph:
    """Nodes and constants of one ONNX graph under construction."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)
    layers: list[str] = field(default_factory=list)  # the description

    def fresh(self, stem: str) -> str:
        return f"{stem}{next(self.counter)}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: object) -> str:
        out = self.fresh(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def pool(self, x: Tensor, spec: PoolSpec) -> Tensor:
        """The pool node of `spec` over `x` (float), and its result's shape."""
        n, c, h, w = x.shape
        if spec.kind == "global":
            y = self.node("GlobalAveragePool", [x.name], "gap")
        else:
            op = "MaxPool" if spec.kind == "max" else "AveragePool"
            y = self.node(op, [x.name], "pool", **spec.onnx_attrs())
        return Tensor(y, (n, c, *spec.out_hw(h, w)))

    def save(self, path: Path, x: Tensor, outputs: list[Tensor]) -> Path:
        graph = helper.make_graph(
            self.nodes, "fuzz",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape))
             for t in outputs],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, path)
        return path


def conv_out(size: int, k: int, stride: int, pad: int, dil: int, ceil: bool = False) -> int:
    span = size + pad - dil * (k - 1) - 1
    return (-(-span // stride) if ceil else span // stride) + 1


@dataclass(frozen=True)
class ConvSpec:
    cout: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]
    group: int
    activation: str  # "", "relu", "clip"
    bias: str  # "none", "small", "large", "extreme"

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return (conv_out(h, self.kernel[0], self.strides[0], self.pads[0] + self.pads[2],
                         self.dilations[0]),
                conv_out(w, self.kernel[1], self.strides[1], self.pads[1] + self.pads[3],
                         self.dilations[1]))

    def onnx_attrs(self) -> dict[str, object]:
        return {"kernel_shape": list(self.kernel), "strides": list(self.strides),
                "pads": [self.pads[0], self.pads[1], self.pads[2], self.pads[3]],
                "dilations": list(self.dilations), "group": self.group}


@dataclass(frozen=True)
class PoolSpec:
    kind: str  # "max", "avg", "global"
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    ceil: bool = False
    include_pad: bool = True  # an average's count_include_pad

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.kind == "global":
            return 1, 1
        oh = conv_out(h, self.kernel[0], self.strides[0], self.pads[0] + self.pads[2],
                      self.dilations[0], self.ceil)
        ow = conv_out(w, self.kernel[1], self.strides[1], self.pads[1] + self.pads[3],
                      self.dilations[1], self.ceil)
        if self.ceil:  # onnx drops a last window that would start in the bottom/right pad
            if (oh - 1) * self.strides[0] >= h + self.pads[0]:
                oh -= 1
            if (ow - 1) * self.strides[1] >= w + self.pads[1]:
                ow -= 1
        return oh, ow

    def ambiguous(self, h: int, w: int) -> bool:
        """ceil_mode where onnx's shape inference keeps a last window starting in the
        bottom/right pad and onnxruntime drops it: the two disagree on the shape."""
        if not self.ceil or self.kind == "global":
            return False
        oh, ow = self.out_hw(h, w)
        full = (conv_out(h, self.kernel[0], self.strides[0], self.pads[0] + self.pads[2],
                         self.dilations[0], True),
                conv_out(w, self.kernel[1], self.strides[1], self.pads[1] + self.pads[3],
                         self.dilations[1], True))
        return (oh, ow) != full

    def onnx_attrs(self) -> dict[str, object]:
        attrs: dict[str, object] = {"kernel_shape": list(self.kernel),
                                    "strides": list(self.strides), "pads": list(self.pads),
                                    "ceil_mode": int(self.ceil)}
        if self.kind == "max":
            attrs["dilations"] = list(self.dilations)
        else:
            attrs["count_include_pad"] = int(self.include_pad)
        return attrs


class QdqBuilder:
    """A QDQ graph written directly: the caller picks every quantization parameter."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.g = Graph()
        self.rng = rng

    def qdq(self, value: str, shape: tuple[int, ...], q: Quant) -> Tensor:
        scale = self.g.const("s", np.float32(q.scale))
        zp = self.g.const("z", np.array(q.zp, dtype=q.numpy_type))
        codes = self.g.node("QuantizeLinear", [value, scale, zp], "q")
        return Tensor(self.g.node("DequantizeLinear", [codes, scale, zp], "t"), shape, q)

    def input(self, shape: tuple[int, ...], q: Quant) -> Tensor:
        self.g.layers.append(f"input{list(shape)} {_q(q)}")
        return self.qdq("input", shape, q)

    def weights(self, codes: np.ndarray, scales: np.ndarray, axis: int = 0) -> str:
        w = self.g.const("w", codes.astype(np.int8))
        s = self.g.const("ws", scales.astype(np.float32))
        z = self.g.const("wz", np.zeros(len(scales), dtype=np.int8))
        return self.g.node("DequantizeLinear", [w, s, z], "wf", axis=axis)

    def bias(self, codes: np.ndarray, scales: np.ndarray) -> str:
        b = self.g.const("b", codes.astype(np.int32))
        s = self.g.const("bs", scales.astype(np.float32))
        z = self.g.const("bz", np.zeros(len(scales), dtype=np.int32))
        return self.g.node("DequantizeLinear", [b, s, z], "bf", axis=0)

    def _activation(self, value: str, activation: str, q: Quant) -> str:
        if activation == "relu":
            return self.g.node("Relu", [value], "relu")
        if activation == "clip":  # relu6-like bounds in the output's range
            lo = self.g.const("lo", np.float32(0.0))
            hi = self.g.const("hi", np.float32(q.scale * 60))
            return self.g.node("Clip", [value, lo, hi], "clip")
        return value

    def conv(self, x: Tensor, spec: ConvSpec, w_scales: np.ndarray, q: Quant,
             extreme_weights: bool) -> Tensor:
        assert x.quant is not None
        n, c, h, w = x.shape
        shape = (spec.cout, c // spec.group, *spec.kernel)
        codes = _weight_codes(self.rng, shape, extreme_weights)
        inputs = [x.name, self.weights(codes, w_scales)]
        acc_scales = np.float32(x.quant.scale) * w_scales.astype(np.float32)
        if spec.bias != "none":
            inputs.append(self.bias(_bias_codes(self.rng, spec.cout, spec.bias), acc_scales))
        y = self.g.node("Conv", inputs, "conv", **spec.onnx_attrs())
        y = self._activation(y, spec.activation, q)
        self.g.layers.append(f"conv{_conv_text(spec)} {_q(q)}")
        return self.qdq(y, (n, spec.cout, *spec.out_hw(h, w)), q)

    def pool(self, x: Tensor, spec: PoolSpec, q: Quant) -> Tensor:
        y = self.g.pool(x, spec)
        self.g.layers.append(f"{spec.kind}pool{_pool_text(spec)} {_q(q)}")
        return self.qdq(y.name, y.shape, q)

    def activation(self, x: Tensor, kind: str, q: Quant) -> Tensor:
        self.g.layers.append(f"{kind} {_q(q)}")
        return self.qdq(self._activation(x.name, kind, q), x.shape, q)

    def add(self, a: Tensor, b: Tensor, q: Quant, activation: str) -> Tensor:
        y = self._activation(self.g.node("Add", [a.name, b.name], "add"), activation, q)
        self.g.layers.append(f"add{'+' + activation if activation else ''} {_q(q)}")
        return self.qdq(y, a.shape, q)

    def concat(self, parts: list[Tensor], q: Quant) -> Tensor:
        y = self.g.node("Concat", [p.name for p in parts], "cat", axis=1)
        n, _, h, w = parts[0].shape
        self.g.layers.append(f"concat{len(parts)} {_q(q)}")
        return self.qdq(y, (n, sum(p.shape[1] for p in parts), h, w), q)

    def head(self, x: Tensor, units: int, kind: str, w_scales: np.ndarray, q: Quant,
             bias: str, activation: str, extreme_weights: bool, qdq_flatten: bool) -> Tensor:
        """Flatten (when 4-D) then Gemm (transB) or MatMul (+ Add of the bias).

        With `qdq_flatten` the flattened tensor is quantized again, as onnxruntime's
        quantizer does; without, the Gemm reads DequantizeLinear -> Flatten, as other
        exporters write it (and cimc runs such a Gemm on the host, in float)."""
        assert x.quant is not None
        k = math.prod(x.shape[1:])
        flat = x.name
        if len(x.shape) != 2:
            flat = self.g.node("Flatten", [x.name], "flat", axis=1)
            if qdq_flatten:
                flat = self.qdq(flat, (x.shape[0], k), x.quant).name
        codes = _weight_codes(self.rng, (units, k), extreme_weights)
        acc_scales = np.float32(x.quant.scale) * w_scales.astype(np.float32)
        if kind == "gemm":
            inputs = [flat, self.weights(codes, w_scales)]
            if bias != "none":
                inputs.append(self.bias(_bias_codes(self.rng, units, bias), acc_scales))
            y = self.g.node("Gemm", inputs, "gemm", transB=1)
        else:  # no bias: cimc does not fuse MatMul + Add(bias) into one gemm (yet)
            bias = "none"
            y = self.g.node("MatMul", [flat, self.weights(codes.T.copy(), w_scales, axis=1)],
                            "matmul")
        y = self._activation(y, activation, q)
        self.g.layers.append(f"{'' if qdq_flatten else 'float '}{kind}[{units}] bias={bias}"
                             f"{'+' + activation if activation else ''} {_q(q)}")
        return self.qdq(y, (x.shape[0], units), q)


def _weight_codes(rng: np.random.Generator, shape: tuple[int, ...], extreme: bool) -> np.ndarray:
    if extreme:  # full-scale codes, -128 included: the largest partial sums
        return rng.choice(np.array([-128, 127, -127, 0]), size=shape)
    return rng.integers(-127, 128, size=shape)


def _bias_codes(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "small":
        return rng.integers(-1000, 1001, size=n)
    if kind == "large":
        return rng.integers(-(2**24), 2**24, size=n)
    # at and near the int32 limits
    return rng.choice(np.array([INT32[1], INT32[0], INT32[1] - 1, INT32[0] + 1,
                                INT32[1] - 5000, 2**30]), size=n)


def _q(q: Quant) -> str:
    return f"{'i8' if q.signed else 'u8'}({q.scale:.6g},{q.zp})"


def _conv_text(s: ConvSpec) -> str:
    activation = f",{s.activation}" if s.activation else ""
    return (f"[{s.cout},k{s.kernel[0]}x{s.kernel[1]},s{list(s.strides)},p{list(s.pads)},"
            f"d{list(s.dilations)},g{s.group},bias={s.bias}{activation}]")


def _pool_text(s: PoolSpec) -> str:
    if s.kind == "global":
        return ""
    return (f"[k{list(s.kernel)},s{list(s.strides)},p{list(s.pads)},d{list(s.dilations)}"
            f"{',ceil' if s.ceil else ''}{'' if s.include_pad else ',exclude_pad'}]")


# --- Strategies ---------------------------------------------------------------------

@dataclass
class Case:
    """One generated model: its file, float inputs (samples on axis 0), its layers."""

    path: Path
    x: np.ndarray
    layers: list[str]

    def __str__(self) -> str:
        return f"{self.path.name}: " + " -> ".join(self.layers)


MAX_CHANNELS = 8
SAMPLES = 3


def _f32(value: float) -> float:
    """A scale as a float32 ONNX stores it, kept normal (not 0, subnormal or inf)."""
    return float(np.float32(min(max(value, 2.0**-120), 2.0**120)))


@st.composite
def zero_points(draw: st.DrawFn, signed: bool) -> int:
    lo, hi = (-128, 127) if signed else (0, 255)
    return draw(st.one_of(st.sampled_from([lo, hi, 0 if signed else 128]),
                          st.integers(lo, hi)))


@st.composite
def next_quant(draw: st.DrawFn, acc_scale: float, signed: bool, extreme: bool) -> Quant:
    """The quantization of a result whose exact value is in units of `acc_scale`.

    The usual choice puts the result scale 2^0..2^12 above the accumulator scale (the
    multiplier below 1, as calibration gives); `extreme` ranges over multipliers from
    2^-40 up to 2^MAX_LOG2_MULTIPLIER."""
    if extreme:
        log2 = draw(st.floats(-MAX_LOG2_MULTIPLIER + 1, 40))
    else:
        log2 = draw(st.floats(0, 12))
    scale = _f32(acc_scale * 2.0**log2)
    return Quant(scale, draw(zero_points(signed)), signed)


@st.composite
def conv_specs(draw: st.DrawFn, c: int, h: int, w: int) -> ConvSpec | None:
    """A conv that fits a [c,h,w] input, or None when none is drawn that fits."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    kind = draw(st.sampled_from(["dense", "dense", "grouped", "depthwise"]))
    divisors = [g for g in range(1, c + 1) if c % g == 0]
    group = {"dense": 1, "depthwise": c}.get(kind) or draw(st.sampled_from(divisors))
    cout = group * draw(st.integers(1, max(1, MAX_CHANNELS // group)))
    spec = ConvSpec(cout, (kh, kw), strides, pads, (dh, dw), group,  # type: ignore[arg-type]
                    draw(st.sampled_from(["", "", "relu", "clip"])),
                    draw(st.sampled_from(["none", "small", "small", "large", "extreme"])))
    oh, ow = spec.out_hw(h, w)
    return spec if oh >= 1 and ow >= 1 else None


@st.composite
def pool_specs(draw: st.DrawFn, h: int, w: int) -> PoolSpec | None:
    kind = draw(st.sampled_from(["max", "max", "avg", "global"]))
    if kind == "global":
        return PoolSpec("global")
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # onnxruntime requires each pad to be smaller than the kernel
    pads = tuple(draw(st.integers(0, kernel[i % 2] - 1)) for i in range(4))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind == "max" else (1, 1)
    spec = PoolSpec(kind, kernel, (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                    pads, dil, draw(st.booleans()),  # type: ignore[arg-type]
                    kind == "max" or draw(st.booleans()))
    oh, ow = spec.out_hw(h, w)
    return spec if oh >= 1 and ow >= 1 and not spec.ambiguous(h, w) else None


@st.composite
def weight_scales(draw: st.DrawFn, n: int, extreme: bool) -> np.ndarray:
    lo, hi = (-30.0, 10.0) if extreme else (-12.0, -3.0)
    base = draw(st.floats(lo, hi))
    spread = draw(st.sampled_from([0.0, 1.0, 4.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    logs = base + np.random.default_rng(seed).uniform(-spread, spread, n)
    return np.exp2(logs).astype(np.float32)


def _inputs(rng: np.random.Generator, shape: tuple[int, ...], q: Quant) -> np.ndarray:
    """Float inputs that exercise the input's whole code range, saturation and ties."""
    lo, hi = (-128, 127) if q.signed else (0, 255)
    codes = rng.integers(lo - 8, hi + 9, size=(SAMPLES, *shape[1:]))
    offsets = rng.choice(np.array([0.0, 0.5, -0.5, 0.25, -0.3]), size=codes.shape)
    return ((codes - q.zp + offsets) * q.scale).astype(np.float32)


class Draw:
    """What one example draws, shared by the layer helpers below."""

    def __init__(self, draw: st.DrawFn, builder: QdqBuilder, signed: bool,
                 extreme: bool) -> None:
        self.draw, self.b, self.signed, self.extreme = draw, builder, signed, extreme

    def quant_after(self, acc_scale: float) -> Quant:
        return self.draw(next_quant(acc_scale, self.signed, self.extreme))

    def quant_near(self, x: Tensor) -> Quant:
        """The input's own quantization, or one near it (pools, activations, adds)."""
        assert x.quant is not None
        if self.draw(st.booleans()):
            return x.quant
        log2 = self.draw(st.floats(-MAX_LOG2_MULTIPLIER + 1, 20) if self.extreme
                         else st.floats(-3, 3))
        return Quant(_f32(x.quant.scale * 2.0**log2), self.draw(zero_points(self.signed)),
                     self.signed)

    def add_quant(self, a: Tensor, b: Tensor) -> Quant:
        """The result quantization of a + b. cimc adds in integers only when the larger
        operand scale is below 2^20 times the result's (docs/ir.md, add); extreme draws
        go past it."""
        assert a.quant is not None and b.quant is not None
        if self.draw(st.booleans()) and max(a.quant.scale, b.quant.scale) < a.quant.scale * 2**19:
            return a.quant
        log2 = self.draw(st.floats(-30, 40) if self.extreme else st.floats(-3, 3))
        return Quant(_f32(max(a.quant.scale, b.quant.scale) * 2.0**log2),
                     self.draw(zero_points(self.signed)), self.signed)

    def conv(self, x: Tensor, spec: ConvSpec, q: Quant | None = None) -> Tensor:
        assert x.quant is not None
        scales = self.draw(weight_scales(spec.cout, self.extreme))
        if q is None:
            q = self.quant_after(x.quant.scale * float(scales.max()))
        return self.b.conv(x, spec, scales, q, self.draw(st.booleans()) and self.extreme)

    def layer(self, x: Tensor) -> Tensor:
        """One conv, pool or activation on the image `x`."""
        _, c, h, w = x.shape
        for _ in range(3):  # a few tries at a conv or pool that fits the image
            kind = self.draw(st.sampled_from(["conv", "conv", "pool", "activation"]))
            if kind == "conv":
                spec = self.draw(conv_specs(c, h, w))
                if spec is not None:
                    return self.conv(x, spec)
            elif kind == "pool":
                pool = self.draw(pool_specs(h, w))
                if pool is not None:
                    return self.b.pool(x, pool, self.quant_near(x))
            else:
                break
        return self.b.activation(x, self.draw(st.sampled_from(["relu", "clip"])),
                                 self.quant_near(x))

    def same_shape_conv(self, x: Tensor, cout: int, q: Quant | None = None) -> Tensor:
        """A stride-1 conv padded to keep the image size (a residual or concat branch)."""
        _, c, _, _ = x.shape
        k = self.draw(st.sampled_from([1, 3]))
        d = self.draw(st.integers(1, 2))
        p = d * (k - 1) // 2
        group = self.draw(st.sampled_from([1, c])) if cout % c == 0 else 1
        spec = ConvSpec(cout, (k, k), (1, 1), (p, p, p, p), (d, d), group,
                        self.draw(st.sampled_from(["", "relu"])),
                        self.draw(st.sampled_from(["none", "small", "large", "extreme"])))
        return self.conv(x, spec, q)

    def head(self, x: Tensor) -> Tensor:
        assert x.quant is not None
        units = self.draw(st.integers(1, 10))
        scales = self.draw(weight_scales(units, self.extreme))
        q = self.quant_after(x.quant.scale * float(scales.max()))
        return self.b.head(x, units, self.draw(st.sampled_from(["gemm", "matmul"])), scales, q,
                           self.draw(st.sampled_from(["none", "small", "large", "extreme"])),
                           self.draw(st.sampled_from(["", "", "relu"])),
                           self.draw(st.booleans()) and self.extreme,
                           self.draw(st.sampled_from([True, True, False])))


_FILES = itertools.count()


def _start(draw: st.DrawFn, max_hw: int) -> tuple[Draw, Tensor, np.random.Generator]:
    signed = draw(st.booleans())
    extreme = draw(st.sampled_from([False, False, True]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (1, draw(st.integers(1, 4)), draw(st.integers(1, max_hw)),
             draw(st.integers(1, max_hw)))
    log2 = draw(st.floats(-100, 100) if extreme else st.floats(-8, 0))
    q = Quant(_f32(2.0**log2), draw(zero_points(signed)), signed)
    d = Draw(draw, QdqBuilder(rng), signed, extreme)
    return d, d.b.input(shape, q), rng


def _finish(d: Draw, x0: Tensor, y: Tensor, rng: np.random.Generator, directory: Path) -> Case:
    assert x0.quant is not None
    path = d.b.g.save(directory / f"fuzz-{next(_FILES)}.onnx", x0, [y])
    return Case(path, _inputs(rng, x0.shape, x0.quant), d.b.g.layers)


@st.composite
def chain_cases(draw: st.DrawFn, directory: Path) -> Case:
    """input -> 1..3 of conv/pool/relu/clip -> optional flatten + gemm/matmul."""
    d, x0, rng = _start(draw, 8)
    y = x0
    for _ in range(draw(st.integers(1, 3))):
        y = d.layer(y)
    if draw(st.booleans()) and math.prod(y.shape[1:]) <= 256:
        y = d.head(y)
    return _finish(d, x0, y, rng, directory)


@st.composite
def branch_cases(draw: st.DrawFn, directory: Path) -> Case:
    """input -> optional conv -> two branches joined by add (residual or two convs) or
    concat -> optional layer and head."""
    d, x0, rng = _start(draw, 6)
    x = d.layer(x0) if draw(st.booleans()) else x0
    _, c, _, _ = x.shape
    assert x.quant is not None
    if draw(st.booleans()):  # add
        left = x if draw(st.booleans()) else d.same_shape_conv(x, c)
        right = d.same_shape_conv(x, c)
        if draw(st.booleans()):
            left, right = right, left
        y = d.b.add(left, right, d.add_quant(left, right), draw(st.sampled_from(["", "relu"])))
    else:
        parts = []
        # operands quantized alike (each a conv to the same quantization) or not
        shared = x.quant if draw(st.booleans()) else None
        for _ in range(draw(st.integers(2, 3))):
            if draw(st.booleans()):
                parts.append(x)
            else:
                parts.append(d.same_shape_conv(x, draw(st.integers(1, 4)), shared))
        y = d.b.concat(parts, shared if shared is not None else d.quant_near(x))
    if draw(st.booleans()):
        y = d.layer(y)
    if draw(st.booleans()) and math.prod(y.shape[1:]) <= 256:
        y = d.head(y)
    return _finish(d, x0, y, rng, directory)


# --- Float graphs for onnxruntime's quantizer -----------------------------------------

class FloatBuilder:
    """A float graph of the same layers, for `models.quantize_qdq` to quantize."""

    def __init__(self, rng: np.random.Generator, extreme: bool) -> None:
        self.g = Graph()
        self.rng = rng
        self.extreme = extreme

    def _weights(self, shape: tuple[int, ...]) -> np.ndarray:
        w = self.rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
        if self.extreme:  # per-channel magnitudes over many decades, a channel all zero
            w *= np.exp2(self.rng.uniform(-16, 8, (shape[0],) + (1,) * (len(shape) - 1)))
            w[self.rng.integers(shape[0])] = 0.0
        return w.astype(np.float32)

    def _bias(self, n: int) -> np.ndarray:
        scale = 10.0 ** self.rng.uniform(-3, 3) if self.extreme else 0.1
        return (self.rng.standard_normal(n) * scale).astype(np.float32)

    def conv(self, x: Tensor, spec: ConvSpec) -> Tensor:
        n, c, h, w = x.shape
        inputs = [x.name, self.g.const("w", self._weights((spec.cout, c // spec.group,
                                                            *spec.kernel)))]
        if spec.bias != "none":
            inputs.append(self.g.const("b", self._bias(spec.cout)))
        y = self.g.node("Conv", inputs, "conv", **spec.onnx_attrs())
        self.g.layers.append(f"conv{_conv_text(spec)}")
        return Tensor(self.activation_node(y, spec.activation), (n, spec.cout,
                                                                 *spec.out_hw(h, w)))

    def activation_node(self, value: str, kind: str) -> str:
        if kind == "relu":
            return self.g.node("Relu", [value], "relu")
        if kind == "clip":
            lo, hi = self.g.const("lo", np.float32(0.0)), self.g.const("hi", np.float32(6.0))
            return self.g.node("Clip", [value, lo, hi], "clip")
        return value

    def activation(self, x: Tensor, kind: str) -> Tensor:
        self.g.layers.append(kind)
        return Tensor(self.activation_node(x.name, kind), x.shape)

    def pool(self, x: Tensor, spec: PoolSpec) -> Tensor:
        self.g.layers.append(f"{spec.kind}pool{_pool_text(spec)}")
        return self.g.pool(x, spec)

    def add(self, a: Tensor, b: Tensor, activation: str) -> Tensor:
        self.g.layers.append(f"add{'+' + activation if activation else ''}")
        return Tensor(self.activation_node(self.g.node("Add", [a.name, b.name], "add"),
                                           activation), a.shape)

    def concat(self, parts: list[Tensor]) -> Tensor:
        n, _, h, w = parts[0].shape
        self.g.layers.append(f"concat{len(parts)}")
        return Tensor(self.g.node("Concat", [p.name for p in parts], "cat", axis=1),
                      (n, sum(p.shape[1] for p in parts), h, w))

    def head(self, x: Tensor, units: int, kind: str, activation: str) -> Tensor:
        k = math.prod(x.shape[1:])
        flat = self.g.node("Flatten", [x.name], "flat", axis=1) if len(x.shape) != 2 else x.name
        w = self._weights((units, k))
        if kind == "gemm":
            y = self.g.node("Gemm", [flat, self.g.const("w", w),
                                     self.g.const("b", self._bias(units))], "gemm", transB=1)
        else:  # MatMul without bias (MatMul + Add is not fused, see QdqBuilder.head)
            y = self.g.node("MatMul", [flat, self.g.const("w", w.T.copy())], "matmul")
        self.g.layers.append(f"{kind}[{units}]{'+' + activation if activation else ''}")
        return Tensor(self.activation_node(y, activation), (x.shape[0], units))


@st.composite
def quantizer_cases(draw: st.DrawFn, directory: Path) -> Case:
    """A float graph (convs, pools, activations, an add or concat block, a head)
    quantized by onnxruntime's quantize_static (QDQ, per-channel int8 weights)."""
    from models import quantize_qdq

    signed = draw(st.booleans())
    extreme = draw(st.sampled_from([False, False, True]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = FloatBuilder(rng, extreme)
    shape = (1, draw(st.integers(1, 4)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    b.g.layers.append(f"input{list(shape)} {'int8' if signed else 'uint8'}"
                      f"{' extreme' if extreme else ''}")
    x0 = y = Tensor("input", shape)

    def layer(y: Tensor) -> Tensor:
        _, c, h, w = y.shape
        kind = draw(st.sampled_from(["conv", "conv", "pool", "activation", "block"]))
        if kind == "conv":
            spec = draw(conv_specs(c, h, w))
            return y if spec is None else b.conv(y, spec)
        if kind == "pool":
            pool = draw(pool_specs(h, w))
            return y if pool is None else b.pool(y, pool)
        if kind == "activation":
            return b.activation(y, draw(st.sampled_from(["relu", "clip"])))
        branches = []
        for _ in range(2):
            k = draw(st.sampled_from([1, 3]))
            cout = c if draw(st.booleans()) else draw(st.integers(1, 4))
            spec = ConvSpec(cout, (k, k), (1, 1), (k // 2,) * 4, (1, 1), 1,  # type: ignore[arg-type]
                            draw(st.sampled_from(["", "relu"])), "small")
            branches.append(y if draw(st.booleans()) and cout == c else b.conv(y, spec))
        if branches[0].shape == branches[1].shape and draw(st.booleans()):
            return b.add(branches[0], branches[1], draw(st.sampled_from(["", "relu"])))
        return b.concat(branches)

    # A conv first: onnxruntime leaves a pool or activation that reads the float input
    # unquantized, which cimc refuses (the chip starts at a QuantizeLinear).
    first = draw(conv_specs(*shape[1:]))
    y = b.conv(y, first or ConvSpec(2, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "", "small"))
    for _ in range(draw(st.integers(0, 2))):
        y = layer(y)
    if draw(st.booleans()) and math.prod(y.shape[1:]) <= 256:
        y = b.head(y, draw(st.integers(1, 10)), draw(st.sampled_from(["gemm", "matmul"])),
                   draw(st.sampled_from(["", "relu"])))
    source = b.g.save(directory / f"fuzz-float-{next(_FILES)}.onnx", x0, [y])
    spread = 2.0 ** rng.uniform(-20, 20) if extreme else 1.0
    batches = (rng.standard_normal((8, *shape[1:])) * spread).astype(np.float32)
    path = quantize_qdq(source, batches, "int8" if signed else "uint8")
    x = (rng.standard_normal((SAMPLES, *shape[1:])) * spread * 1.5).astype(np.float32)
    return Case(path, x, b.g.layers)
