"""Generate the instruction reference of docs/isa.md from the table.

docs/isa.md is hand-written down to the MARKER line; everything after it is
generated here. `python -m cimc.isa.docgen` rewrites the file; `--check` exits 1
when it is stale (a test does the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cimc.isa.table import (
    COST_CLASSES,
    OPCODE_BITS,
    SPECS,
    TYPE_SUFFIXES,
    WORD_BITS,
    InstructionSpec,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "isa.md"
MARKER = "<!-- Everything below is generated from isa/table.py by `python -m cimc.isa.docgen`. -->"

KIND_SYNTAX = {
    "reg": ("`rN`", "register r0..r15"),
    "mem": ("`offset(rN)`", "local memory byte address rN + offset"),
    "gmem": ("`offset(rN)`", "global memory byte address rN + offset"),
    "label": ("`name`", "label of an instruction of the same core (encoded as its index)"),
    "group": ("integer", "crossbar group id, as defined in the image for this core"),
    "core": ("integer", "core id (global numbering)"),
    "byte": ("integer", "byte value (-128..255; stored as its low 8 bits)"),
}


def _family(spec: InstructionSpec) -> str:
    """Mnemonic with the type suffix written as T (vadd.i8 -> vadd.T)."""
    return spec.mnemonic[: -len(spec.suffix)] + "T" if spec.suffix else spec.mnemonic


def _bits(lo: int, hi: int) -> str:
    return f"[{hi}:{lo}]" if hi != lo else f"[{lo}]"


def _kinds_table() -> list[str]:
    rows = ["| kind | written | meaning | fields |", "|---|---|---|---|"]
    operands = {op.kind: op for spec in SPECS for op in spec.operands}
    immediates = sorted((k for k in operands if k not in KIND_SYNTAX),
                        key=lambda k: (k[0], int(k[1:])))
    for kind in [k for k in KIND_SYNTAX if k in operands] + immediates:
        fields = ", ".join(f"{f.width}-bit {'signed' if f.signed else 'unsigned'} "
                           f"{f.min}..{f.max}" for f in operands[kind].fields)
        written, meaning = KIND_SYNTAX.get(kind, ("integer", "immediate"))
        rows.append(f"| `{kind}` | {written} | {meaning} | {fields} |")
    return rows


def _summary_table() -> list[str]:
    rows = ["| opcode | instruction | class |", "|---|---|---|"]
    for spec in SPECS:
        rows.append(f"| `{spec.opcode:#04x}` | `{spec.syntax}` | {spec.cost} |")
    return rows


def _family_section(family: str, specs: list[InstructionSpec]) -> list[str]:
    first = specs[0]
    names = ", ".join(f"`{s.mnemonic}` ({s.opcode:#04x})" for s in specs)
    syntax = first.syntax.replace(first.mnemonic, family, 1)
    lines = [f"### `{family}`", "", f"    {syntax}", "", f"Instructions: {names}.  ",
             f"Latency/energy class: `{first.cost}`.", ""]
    meaning = specs[0].semantics
    if first.suffix:
        meaning = meaning.replace(f"_{first.suffix}", "_T").replace(f"({first.suffix})", "(T)")
    lines += [f"Semantics: `{meaning}`", ""]
    lines += ["| field | bits | values |", "|---|---|---|",
              f"| opcode | {_bits(0, OPCODE_BITS - 1)} | "
              + ", ".join(f"{s.opcode:#04x}" for s in specs) + " |"]
    for fld in first.fields:
        lines.append(f"| `{fld.name}` | {_bits(fld.lo, fld.hi)} | {fld.min}..{fld.max} |")
    used = first.fields[-1].hi + 1 if first.fields else OPCODE_BITS
    if used < WORD_BITS:
        lines.append(f"| (zero) | {_bits(used, WORD_BITS - 1)} | 0 |")
    return lines + [""]


def reference() -> str:
    """The generated part of docs/isa.md."""
    lines = [MARKER, "", "## Instruction reference", "",
             f"Every instruction is one {WORD_BITS}-bit little-endian word: the opcode in bits "
             f"[{OPCODE_BITS - 1}:0], then the operand fields in operand order from bit "
             f"{OPCODE_BITS} up; unused bits are zero. Type suffixes: "
             + ", ".join(f"`.{t}`" for t in TYPE_SUFFIXES) + ". Latency/energy classes: "
             + ", ".join(f"`{c}`" for c in COST_CLASSES) + ".", "", "### Operand kinds", ""]
    lines += _kinds_table() + ["", "### All instructions", ""] + _summary_table() + [""]
    families: dict[str, list[InstructionSpec]] = {}
    for spec in SPECS:
        families.setdefault(_family(spec), []).append(spec)
    for family, specs in families.items():
        lines += _family_section(family, specs)
    return "\n".join(lines).rstrip() + "\n"


def render(current: str) -> str:
    """`current` with everything from MARKER on replaced by the generated reference."""
    head = current.split(MARKER, 1)[0] if MARKER in current else current.rstrip() + "\n\n"
    return head + reference()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    current = DOC.read_text() if DOC.exists() else ""
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{DOC} is stale: run `python -m cimc.isa.docgen`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
