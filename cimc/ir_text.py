"""The textual form of the tensor IR (.cir): print a Module, parse it back.

`print_module` then `parse_module` gives back the same module, and printing
that again gives the same text byte for byte. The syntax is in cimc/cir.lark
and described in docs/ir.md ("Textual form").
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cimc.diagnostics import CimcError, located_error
from cimc.ir import DTYPES, Module, Op, Quant, TensorType

if TYPE_CHECKING:
    from lark import Lark

# Constants with at most this many elements print as a literal list.
LITERAL_LIMIT = 16
# Constants a .cir file may define: beyond this it is a typo, not a model.
MAX_CONSTANT_BYTES = 1 << 30
# Dimensions beyond this overflow the int64 sizes numpy computes.
MAX_DIM = 1 << 40
# Words the grammar reserves: a kind or attribute named like one is quoted.
KEYWORDS = frozenset(
    "module input const output loc q splat elided true false inf nan".split()
)
_BARE_VALUE = re.compile(r"[A-Za-z0-9_./\-]+")
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_INTEGER = re.compile(r"[-+]?\d+")
# Characters str.splitlines() breaks at, and surrogates: escaped in quoted names.
_UNSAFE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


# ---- printing -----------------------------------------------------------

def print_module(module: Module, elide_constants: bool = False) -> str:
    """The module as .cir text (ends with a newline).

    With `elide_constants`, constants that would print as base64 print as
    `elided` instead; parsing that gives zeros of the constant's type.
    """
    lines = [f"module @{_name(module.name)} {{"]
    for name in module.inputs:
        lines.append(f"  input %{_name(name)} : {_type(module.values[name])}")
    for name, array in module.constants.items():
        data = _data(array, elide_constants)
        lines.append(f"  const %{_name(name)} : {_type(module.values[name])} = {data}")
    for op in module.ops():
        lines.append("  " + _op(module, op))
    for name in module.outputs:
        lines.append(f"  output %{_name(name)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _name(name: str) -> str:
    """A value or module name, quoted unless it is plain."""
    if _BARE_VALUE.fullmatch(name) and "//" not in name:
        return name
    return _quote(name)


def value_ref(name: str) -> str:
    """How the text writes a value: `%name`, quoted if needed (for messages too)."""
    return "%" + _name(name)


def _word(word: str) -> str:
    """An op kind or attribute name, quoted unless it is plain."""
    return word if _BARE_WORD.fullmatch(word) and word not in KEYWORDS else _quote(word)


def _float(value: Any) -> str:
    return repr(float(value))


def _type(type_: TensorType) -> str:
    text = f"{type_.dtype}[{','.join(str(d) for d in type_.shape)}]"
    q = type_.quant
    if q is None:
        return text
    if q.axis is None:
        return f"{text} q<scale={_float(q.scale[0])}, zp={q.zero_point[0]}>"
    scales = ", ".join(_float(s) for s in q.scale)
    zps = ", ".join(str(z) for z in q.zero_point)
    return f"{text} q<axis={q.axis}, scale=[{scales}], zp=[{zps}]>"


def _attr(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _float(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list | tuple) and not any(isinstance(v, list | tuple | str)
                                                   for v in value):
        return "[" + ", ".join(_attr(v) for v in value) + "]"
    raise TypeError(f"attribute value {value!r} has no textual form")


def _op(module: Module, op: Op) -> str:
    text = ", ".join(f"%{_name(v)}" for v in op.outputs)
    text = f"{text} = " if text else ""
    text += f"{_word(op.kind)}({', '.join(f'%{_name(v)}' for v in op.inputs)})"
    if op.attrs:
        text += " {" + ", ".join(f"{_word(k)}={_attr(v)}" for k, v in op.attrs.items()) + "}"
    if op.outputs:
        text += " : " + ", ".join(_type(module.values[v]) for v in op.outputs)
    if not op.outputs or op.name != op.outputs[0]:
        text += f" loc({_quote(op.name)})"
    return text


def _element(value: Any, dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "true" if value else "false"
    if dtype.kind == "f":
        return str(np.float32(value))  # shortest text that reads back as this float32
    return str(int(value))


def _data(array: np.ndarray, elide: bool) -> str:
    flat = array.reshape(-1)
    if flat.size == 0:
        return "[]"
    bits = flat.view(f"u{flat.dtype.itemsize}")  # compare bits: -0.0 and NaN count
    if (bits == bits[0]).all():
        text = _element(flat[0], flat.dtype)
        if _reads_back([text], flat[:1]):
            return f"splat({text})"
    if flat.size <= LITERAL_LIMIT:
        texts = [_element(v, flat.dtype) for v in flat]
        if _reads_back(texts, flat):
            return "[" + ", ".join(texts) + "]"
    if elide:
        return "elided"
    raw = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
    return 'base64"' + base64.b64encode(raw).decode("ascii") + '"'


def _reads_back(texts: list[str], flat: np.ndarray) -> bool:
    """Whether decimal texts give these exact bits (not so for NaN payloads)."""
    if flat.dtype.kind != "f":
        return True
    back = np.array([float(t) for t in texts], dtype=np.float64).astype(flat.dtype)
    return back.tobytes() == flat.tobytes()


# ---- parsing ------------------------------------------------------------

@functools.cache
def _parser() -> Lark:
    from lark import Lark

    grammar = (Path(__file__).parent / "cir.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_module(text: str, filename: str = "<input>", *, verify: bool = False) -> Module:
    """Parse .cir text into a Module; errors are CimcErrors at file:line:col.

    The parser checks syntax, names (defined once, before use) and constant
    data. With `verify`, the module is also verified (cimc.verifier) and a
    verifier error points at the line of the op or value it names.
    """
    from lark.exceptions import UnexpectedInput

    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    builder = _Builder(filename, text)
    module = builder.module(tree)
    if verify:
        from cimc.verifier import VerifyError
        from cimc.verifier import verify as verify_module

        try:
            verify_module(module)
        except VerifyError as exc:
            place = builder.ops.get(exc.op or "") or builder.defined.get(exc.value or "")
            if place is None:
                raise CimcError(f"{filename}: {exc.message}") from None
            raise builder.error(exc.message, place) from None
    return module


# Descriptions of the grammar's named terminals, for "expected ..." messages.
_TERMINALS = {
    "VALUE": "a value (%name)",
    "SYMBOL": "a module name (@name)",
    "NAME": "a name",
    "STRING": 'a quoted string ("...")',
    "NUMBER": "a number",
    "BASE64": 'base64"..."',
}


def _syntax_error(exc: Any, text: str, filename: str) -> CimcError:
    from lark.exceptions import UnexpectedToken

    expected = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    described = []
    for name in expected:
        if name in _TERMINALS:
            described.append(_TERMINALS[name])
        elif name in ("$END", "<END-OF-FILE>"):
            described.append("end of input")
        else:
            pattern = _parser().get_terminal(name).pattern
            described.append(f"'{pattern.value}'" if pattern.type == "str" else name)
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        message = "unexpected end of input"
        line, column = text.count("\n") + 1, len(text) - text.rfind("\n")
    elif isinstance(exc, UnexpectedToken):
        shown = exc.token if len(exc.token) <= 40 else exc.token[:37] + "..."
        message = f"unexpected '{shown}'"
        line, column = exc.line, exc.column
    else:
        message = f"unexpected character {text[exc.pos_in_stream]!r}"
        line, column = exc.line, exc.column
    described.sort()
    if described:
        message += ", expected " + (
            described[0] if len(described) == 1 else "one of: " + ", ".join(described)
        )
    return located_error(message, filename, text, line, column)


@dataclass
class _Builder:
    """Turns the parse tree into a Module, checking names and data as it goes."""

    filename: str
    text: str
    # Where each value name is defined, for "already defined" messages.
    defined: dict[str, Any] = field(default_factory=dict)
    # Where each op starts, to locate verifier errors.
    ops: dict[str, Any] = field(default_factory=dict)
    # The statement being built: where errors without a better place point.
    anchor: Any = None

    def error(self, message: str, where: Any) -> CimcError:
        for place in (where, self.anchor):
            meta = getattr(place, "meta", place)
            if getattr(meta, "line", None):
                return located_error(message, self.filename, self.text, meta.line, meta.column)
        return CimcError(message)

    def module(self, tree: Any) -> Module:
        symbol, *statements = tree.children
        module = Module(self.name(symbol))
        outputs: list[Any] = []
        for statement in statements:
            self.anchor = statement
            kind = statement.data
            if kind == "input":
                token, type_ = statement.children
                module.add_input(self.define(token), self.type(type_))
            elif kind == "const":
                token, type_tree, data = statement.children
                type_ = self.type(type_tree)
                name = self.define(token)
                module.add_constant(name, self.data(data, type_), type_.quant)
            elif kind == "op":
                self.op(module, statement)
            else:
                outputs.append(statement.children[0])
        for token in outputs:
            module.outputs.append(self.use(token))
        return module

    def name(self, token: Any) -> str:
        body = token[1:]
        if not body.startswith('"'):
            return body
        return self.string(token, body)

    def string(self, token: Any, body: str | None = None) -> str:
        try:
            return str(json.loads(token if body is None else body))
        except json.JSONDecodeError as exc:
            raise self.error(f"bad escape in quoted string: {exc.msg}", token) from None

    def define(self, token: Any) -> str:
        name = self.name(token)
        first = self.defined.get(name)
        if first is not None:
            raise self.error(f"value %{_name(name)} is already defined on line {first.line}", token)
        self.defined[name] = token
        return name

    def use(self, token: Any) -> str:
        name = self.name(token)
        if name not in self.defined:
            raise self.error(f"use of undefined value %{_name(name)}", token)
        return name

    def type(self, tree: Any) -> TensorType:
        dtype, dims, quant = tree.children
        if dtype not in DTYPES:
            raise self.error(
                f"unknown element type '{dtype}'; valid types: {', '.join(DTYPES)}", dtype
            )
        shape = tuple(self.integer(d) for d in (dims.children if dims else ()))
        for token, dim in zip(dims.children if dims else (), shape, strict=True):
            if not 0 <= dim <= MAX_DIM:
                raise self.error(f"dimension {dim} is out of range; dimensions are "
                                 f"0..{MAX_DIM}", token)
        return TensorType(shape, str(dtype), None if quant is None else self.quant(quant))

    def integer(self, token: Any) -> int:
        if not _INTEGER.fullmatch(token):
            raise self.error(f"expected an integer, got '{token}'", token)
        return int(token)

    def quant(self, tree: Any) -> Quant:
        fields: dict[str, Any] = {}
        for item in tree.children:
            key, value = item.children
            if key not in ("axis", "scale", "zp"):
                raise self.error(f"unknown quantization field '{key}'; valid: axis, scale, zp", key)
            if key in fields:
                raise self.error(f"quantization field '{key}' given twice", key)
            fields[key] = value
        if "scale" not in fields or "zp" not in fields:
            raise self.error("quantization needs both scale=... and zp=...", tree)
        axis = fields.get("axis")
        scale, zp = fields["scale"], fields["zp"]
        scales: tuple[float, ...]
        zps: tuple[int, ...]
        if axis is None:
            if not isinstance(scale, str) or not isinstance(zp, str):
                raise self.error("per-tensor scale and zp are single numbers; "
                                 "give axis=N for per-axis lists", tree)
            scales, zps = (self.number(scale),), (self.integer(zp),)
        else:
            if isinstance(scale, str) or isinstance(zp, str):
                raise self.error("per-axis scale and zp are lists", tree)
            scales = tuple(self.number(s) for s in self.items(scale))
            zps = tuple(self.integer(z) for z in self.items(zp))
        try:
            return Quant(scales, zps, None if axis is None else self.integer(axis))
        except ValueError as exc:
            raise self.error(str(exc), tree) from None

    def number(self, token: Any) -> float:
        if not isinstance(token, str):
            raise self.error("expected a number", token)
        return float(token)

    @staticmethod
    def items(tree: Any) -> list[Any]:
        return [c for c in tree.children if c is not None]

    def attr(self, value: Any) -> Any:
        if not isinstance(value, str):  # a tree: true, false or a list
            if value.data == "true":
                return True
            if value.data == "false":
                return False
            return [self.attr(v) for v in self.items(value)]
        if getattr(value, "type", None) == "STRING":
            return self.string(value)
        return int(value) if _INTEGER.fullmatch(value) else float(value)

    def element(self, value: Any, dtype: np.dtype) -> Any:
        """One constant element, checked against the element type."""
        if not isinstance(value, str):  # a tree: true or false
            if dtype != np.bool_:
                raise self.error(f"{value.data} is not a {_dtype_name(dtype)} value", value)
            return value.data == "true"
        if dtype == np.bool_:
            raise self.error(f"expected true or false, got '{value}'", value)
        if dtype.kind == "f":
            number = float(value)
            with np.errstate(over="ignore"):
                overflows = np.isfinite(number) and not np.isfinite(np.float32(number))
            if overflows:
                raise self.error(f"{value} is out of range for f32", value)
            return number
        integer = self.integer(value)
        info = np.iinfo(dtype)
        if not info.min <= integer <= info.max:
            raise self.error(
                f"{integer} is out of range for {_dtype_name(dtype)} "
                f"[{info.min}, {info.max}]", value)
        return integer

    def data(self, tree: Any, type_: TensorType) -> np.ndarray:
        dtype = type_.numpy_dtype
        nbytes = math.prod(type_.shape) * dtype.itemsize
        if nbytes > MAX_CONSTANT_BYTES:
            raise self.error(f"constant of type {_type(type_)} would take {nbytes} bytes, more "
                             f"than the {MAX_CONSTANT_BYTES} a .cir constant may hold", tree)
        if tree.data == "splat":
            return np.full(type_.shape, self.element(tree.children[0], dtype), dtype=dtype)
        if tree.data == "elided":
            return np.zeros(type_.shape, dtype=dtype)
        if tree.data == "base64":
            token = tree.children[0]
            try:
                raw = base64.b64decode(token[len('base64"'):-1], validate=True)
            except binascii.Error as exc:
                raise self.error(f"bad base64 data: {exc}", token) from None
            if len(raw) != type_.size * dtype.itemsize:
                raise self.error(
                    f"base64 data has {len(raw)} bytes but {_type(type_)} needs "
                    f"{type_.size * dtype.itemsize}", token)
            little = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
            return little.astype(dtype).reshape(type_.shape)
        elements = self.items(tree.children[0])  # data -> list
        if len(elements) != type_.size:
            raise self.error(
                f"constant has {len(elements)} elements but its type {_type(type_)} "
                f"has {type_.size}", tree)
        values = [self.element(v, dtype) for v in elements]
        return np.array(values, dtype=dtype).reshape(type_.shape)

    def op(self, module: Module, tree: Any) -> None:
        results, kind, operands, attrs, types, loc = tree.children
        inputs = [self.use(t) for t in (operands.children if operands else ())]
        outputs = [self.define(t) for t in (results.children if results else ())]
        output_types = [self.type(t) for t in (types.children if types else ())]
        anchor = results.children[0] if results else kind.children[0]
        if len(output_types) != len(outputs):
            raise self.error(
                f"op has {len(outputs)} results but {len(output_types)} types", anchor)
        attributes: dict[str, Any] = {}
        for attr in attrs.children if attrs else ():
            key_token, value = attr.children
            key = self.string(key_token) if key_token.type == "STRING" else str(key_token)
            if key in attributes:
                raise self.error(f"attribute '{key}' given twice", key_token)
            attributes[key] = self.attr(value)
        kind_token = kind.children[0]
        kind_name = self.string(kind_token) if kind_token.type == "STRING" else str(kind_token)
        if loc is not None:
            name = self.string(loc.children[0])
            if not name:
                raise self.error('an op name cannot be empty: give loc("NAME")', loc)
        elif outputs:
            name = outputs[0]
        else:
            raise self.error("an op without results needs a name: loc(\"...\")", anchor)
        if name in module.graph:
            raise self.error(f"op name \"{name}\" is used twice", loc or anchor)
        # add_op would rename an op whose name some other value has; keep it exact.
        self.ops[name] = anchor
        clash = module.values.pop(name, None)
        op = module.add_op(kind_name, inputs, output_types, name=name, outputs=outputs,
                           attrs=attributes)
        if clash is not None:
            module.values[name] = clash
        assert op.name == name


def _dtype_name(dtype: np.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)
