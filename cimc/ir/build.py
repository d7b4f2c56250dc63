"""Building a Module from the .cir parse tree, checking names and data as it goes.

cimc/ir/text.py parses the text (grammar cimc/ir/cir.lark) and hands the tree to
ModuleBuilder; every error is a CimcError at file:line:col.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cimc.diagnostics import CimcError, located_error
from cimc.ir.constants import INTEGER, list_items, read_constant, read_integer
from cimc.ir.module import DTYPES, Module, Quant, TensorType
from cimc.ir.printer import name_text

# Dimensions beyond this overflow the int64 sizes numpy computes.
MAX_DIM = 1 << 40


@dataclass
class ModuleBuilder:
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
                module.add_constant(name, read_constant(data, type_, self.error), type_.quant)
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
            raise self.error(f"value %{name_text(name)} is already defined on line {first.line}",
                             token)
        self.defined[name] = token
        return name

    def use(self, token: Any) -> str:
        name = self.name(token)
        if name not in self.defined:
            raise self.error(f"use of undefined value %{name_text(name)}", token)
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
        return read_integer(token, self.error)

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
            scales = tuple(self.number(s) for s in list_items(scale))
            zps = tuple(self.integer(z) for z in list_items(zp))
        try:
            return Quant(scales, zps, None if axis is None else self.integer(axis))
        except ValueError as exc:
            raise self.error(str(exc), tree) from None

    def number(self, token: Any) -> float:
        if not isinstance(token, str):
            raise self.error("expected a number", token)
        return float(token)

    def attr(self, value: Any) -> Any:
        if not isinstance(value, str):  # a tree: true, false or a list
            if value.data == "true":
                return True
            if value.data == "false":
                return False
            return [self.attr(v) for v in list_items(value)]
        if getattr(value, "type", None) == "STRING":
            return self.string(value)
        return int(value) if INTEGER.fullmatch(value) else float(value)

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

