"""Recurrent layers in `lower`: a quantized lstm or gru written out step by step in the
IR's other integer kinds, which the rest of `lower` makes the chip's ops.

A quantized op (cimc/frontend/recurrent_quant.py; docs/ir.md, "Quantized recurrent
layers") is a composition of gemm, add, lut and mul, so `unroll_recurrent` rewrites it
as exactly that composition, and the program computes what the reference does bit for
bit. Each gate has its own products, so no step slices a projection. The input
projection x·Wᵀ does not depend on the state: per gate one 1x1 conv over x as an image
of T rows, W programmed once, each step taking its row. The recurrent projection h·Rᵀ
reads the previous step's h, so each step has its own gemm of R (the dataflow plan,
placement and the bounds take an acyclic graph of layers); the copies hold equal
weights, and placement lets the copies on one core share their cells (docs/backend.md,
"Recurrent layers, unrolled"). Y is the steps' h concatenated in time order.

A float recurrent op (onnxruntime's quantizer leaves them float, and cimc quantizes
them only from calibration data) or a quantized one over a batch of more than one
sequence is named in one message with every other such op.
"""

from __future__ import annotations

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import Module, Op, Quant, TensorType
from cimc.reference.recurrent import (
    GATE_SCALE,
    GATE_ZERO,
    TANH_SCALE,
    complement_table,
    sigmoid_table,
    tanh_table,
)

RECURRENT_KINDS = ("lstm", "gru", "rnn")


def unroll_recurrent(module: Module) -> None:
    """Every quantized lstm and gru of `module` as its steps (module docstring); one
    CimcError naming every recurrent op that has no integer form on the chip."""
    refused = []
    for op in module.ops():
        if op.kind not in RECURRENT_KINDS:
            continue
        reason = _why_not(module, op)
        if reason:
            refused.append(f"{op.name!r} ({op.kind}, {reason})")
    if refused:
        raise CimcError(
            f"the chip does not run these recurrent layers: op {', op '.join(refused)}; "
            "the reference engine runs them (cimc run --engine reference)")
    for op in [op for op in module.ops() if op.kind in RECURRENT_KINDS]:
        _Unroller(module, op).rewrite()


def _why_not(module: Module, op: Op) -> str | None:
    if not module.values[op.outputs[0]].is_quantized:
        return ("float: onnxruntime's quantizer leaves it float; calibration data "
                "(--calibrate) quantizes an lstm or gru")
    batch = module.values[op.inputs[0]].shape[1]
    if batch != 1:
        return f"a batch of {batch} sequences: export the model with batch 1"
    return None


class _Unroller:
    """The steps of one quantized op (docs/ir.md's composition, in its order)."""

    def __init__(self, module: Module, op: Op) -> None:
        self.module, self.op = module, op
        self.hidden = int(op.attrs["hidden_size"])
        self.scales = [float(s) for s in op.attrs["scales"]]
        x_type = module.values[op.inputs[0]]
        self.steps, _, self.features = x_type.shape
        self.gates = module.values[op.inputs[1]].shape[1] // self.hidden

    def _value(self, kind: str, inputs: list[str], shape: tuple[int, ...], dtype: str,
               quant: Quant, attrs: dict | None = None) -> str:
        return self.module.add_op(kind, inputs, [TensorType(shape, dtype, quant)],
                                  name=f"{self.op.name}.{kind}", attrs=attrs).outputs[0]

    def _codes(self, kind: str, inputs: list[str], scale: float, zero: int = 0) -> str:
        """An int8 [1, H] result of `kind` in (scale, zero)."""
        return self._value(kind, inputs, (1, self.hidden), "i8", Quant((scale,), (zero,)))

    def _table(self, codes: np.ndarray) -> str:
        return self.module.add_constant(self.module.fresh_name(f"{self.op.name}.table"),
                                        codes.astype(np.int8))

    def _lut(self, codes: str, table: np.ndarray, scale: float, zero: int = 0) -> str:
        return self._codes("lut", [codes, self._table(table)], scale, zero)

    def _gate_constants(self, weights: int, what: str, bias: np.ndarray,
                        input_scale: float, kernel: bool = False) -> list[tuple[str, str]]:
        """Per gate, its rows of weight operand `weights` (W or R, int8 per row; as a 1x1
        conv kernel with `kernel`) and of `bias` (in that product's accumulator scale):
        one matvec per gate makes its own result, so no step slices a projection."""
        module, hidden = self.module, self.hidden
        value = self.op.inputs[weights]
        quant = module.values[value].quant
        assert quant is not None
        codes, scales = module.constants[value][0], np.asarray(quant.scale, np.float64)
        found = []
        for k in range(self.gates):
            rows = slice(k * hidden, (k + 1) * hidden)
            per_row = tuple(float(v) for v in scales[rows])
            zeros = (0,) * hidden
            found.append((
                module.add_constant(module.fresh_name(f"{self.op.name}.{what}{k}"),
                                    codes[rows][..., None, None] if kernel else codes[rows],
                                    Quant(per_row, zeros, axis=0)),
                module.add_constant(module.fresh_name(f"{self.op.name}.b{what}{k}"),
                                    bias[rows], Quant(tuple(input_scale * np.asarray(per_row)),
                                                      zeros, axis=0))))
        return found

    def _initial(self, index: int, source: str) -> str:
        """Initial state operand `index` as a runtime value: a take of `source` that
        reads none of it and fills the state's one value (a step's gemm and products
        read runtime tensors on the chip)."""
        value = self.op.inputs[index]
        ty = self.module.values[value]
        codes = np.unique(self.module.constants[value])
        if codes.size != 1:
            raise CimcError(f"op {self.op.name!r} ({self.op.kind}): operand {value!r}, an "
                            "initial state of several values, is not run on the chip (one "
                            "value for every unit, as zeros, is)")
        assert ty.quant is not None
        real = (float(codes[0]) - ty.quant.zero_point[0]) * ty.quant.scale[0]
        filled = self._value("take", [source], (1, self.hidden, 1, 1), ty.dtype, ty.quant,
                             {"axes": [1, 2], "index": [-1] * self.hidden + [0], "fill": real})
        return self._value("reshape", [filled], (1, self.hidden), ty.dtype, ty.quant,
                           {"shape": [1, self.hidden]})

    def rewrite(self) -> None:
        module, op = self.module, self.op
        width = self.gates * self.hidden
        x_type = module.values[op.inputs[0]]
        w_quant = module.values[op.inputs[1]].quant
        r_quant = module.values[op.inputs[2]].quant
        h_quant = module.values[op.inputs[4]].quant
        assert w_quant is not None and r_quant is not None and h_quant is not None
        s_x, s_h = x_type.quant.scale[0], h_quant.scale[0]  # type: ignore[union-attr]
        bias = module.constants[op.inputs[3]][0]
        w = self._gate_constants(1, "W", bias[:width], s_x, kernel=True)
        r = self._gate_constants(2, "R", bias[width:], s_h)
        # x·Wᵀ for every step at once: x as an image of T rows (one pixel of D channels
        # each: the same bytes), one 1x1 conv per gate, so each step reads one row of
        # each result (where a row of T tokens would be read whole by every step).
        steps, features = self.steps, self.features
        rows = self._value("transpose", [op.inputs[0]], (1, features, steps), x_type.dtype,
                           x_type.quant, {"perm": [1, 2, 0]})  # type: ignore[arg-type]
        image = self._value("reshape", [rows], (1, features, steps, 1), x_type.dtype,
                            x_type.quant,  # type: ignore[arg-type]
                            {"shape": [1, features, steps, 1]})
        conv = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
        xg_quant = Quant((self.scales[0],), (0,))
        projected = [self._value("conv", [image, wk, bk], (1, self.hidden, steps, 1), "i8",
                                 xg_quant, conv) for wk, bk in w]
        h = self._initial(4, image)
        c = self._initial(5, image) if op.kind == "lstm" else ""
        order = range(self.steps - 1, -1, -1) if op.attrs["direction"] == "reverse" \
            else range(self.steps)
        ys: dict[int, str] = {}
        for t in order:
            rows_t = [self._value("take", [p], (1, self.hidden, 1, 1), "i8", xg_quant,
                                  {"axes": [2], "index": [t]}) for p in projected]
            xg = [self._value("reshape", [row], (1, self.hidden), "i8", xg_quant,
                              {"shape": [1, self.hidden]}) for row in rows_t]
            hg = [self._codes("gemm", [h, rk, bk], self.scales[1]) for rk, bk in r]
            if op.kind == "lstm":
                h, c = self._lstm_step(xg, hg, c, h_quant.scale[0])
            else:
                h = self._gru_step(xg, hg, h, h_quant.scale[0])
            ys[t] = h
        self._bind_results([ys[t] for t in range(self.steps)], h, c)

    def _lstm_step(self, xg: list[str], hg: list[str], c: str, s_h: float) -> tuple[str, str]:
        gate_scales = self.scales[2:]
        s_c = self.module.values[c].quant.scale[0]  # type: ignore[union-attr]
        pre = [self._codes("add", [xg[k], hg[k]], gate_scales[k]) for k in range(4)]
        i, o, f = (self._lut(pre[k], sigmoid_table(gate_scales[k]), GATE_SCALE, GATE_ZERO)
                   for k in range(3))
        g = self._lut(pre[3], tanh_table(gate_scales[3]), TANH_SCALE)
        c = self._codes("add", [self._codes("mul", [f, c], s_c),
                                self._codes("mul", [i, g], s_c)], s_c)
        h = self._codes("mul", [o, self._lut(c, tanh_table(s_c), TANH_SCALE)], s_h)
        return h, c

    def _gru_step(self, xg: list[str], hg: list[str], h: str, s_h: float) -> str:
        _, _, s_z, s_r, s_rh, s_n = self.scales
        pre_z = self._codes("add", [xg[0], hg[0]], s_z)
        pre_r = self._codes("add", [xg[1], hg[1]], s_r)
        z = self._lut(pre_z, sigmoid_table(s_z), GATE_SCALE, GATE_ZERO)
        keep = self._lut(pre_z, complement_table(s_z), GATE_SCALE, GATE_ZERO)
        reset = self._lut(pre_r, sigmoid_table(s_r), GATE_SCALE, GATE_ZERO)
        r_h = self._codes("mul", [reset, hg[2]], s_rh)
        n = self._lut(self._codes("add", [xg[2], r_h], s_n), tanh_table(s_n),
                      TANH_SCALE)
        return self._codes("add", [self._codes("mul", [keep, n], s_h),
                                   self._codes("mul", [z, h], s_h)], s_h)

    def _bind_results(self, ys: list[str], h: str, c: str) -> None:
        """Y [T, 1, 1, H] (the steps' h in time order), Y_h and Y_c [1, 1, H], under the
        op's result names, which its readers and the module's outputs use."""
        module, op = self.module, self.op
        h_quant = module.values[h].quant
        assert h_quant is not None
        y = ys[0] if len(ys) == 1 else self._value("concat", ys, (self.steps, self.hidden),
                                                   "i8", h_quant, {"axis": 0})
        shaped = {}
        for result, value in zip(op.outputs, [y, h, c], strict=False):
            ty = module.values[result]
            shaped[result] = self._value("reshape", [value], tuple(ty.shape), ty.dtype,
                                         ty.quant, {"shape": list(ty.shape)})  # type: ignore[arg-type]
            module.replace_uses(result, shaped[result])
        module.remove_op(op)
        for result, value in shaped.items():
            module.rename_value(value, result)
