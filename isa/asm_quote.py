"""Names in assembly text: any ONNX node or value name must survive the trip
through prog.s, so names go into directives as bare words or JSON strings
(ASCII, one line: what `text_of` in isa/asm_directives.py reads back) and into
comments escaped the same way (a newline would end the comment)."""

from __future__ import annotations

import json
import re

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.$]*")
_REGISTER = re.compile(r"r\d+")
_PLAIN = re.compile(r"[ -\[\]-~]*")  # printable ASCII except the backslash


def quoted(text: str) -> str:
    """`text` as a string literal of the grammar: JSON, ASCII only, on one line."""
    return json.dumps(text, ensure_ascii=True).replace("\x7f", "\\u007f")


def name_token(text: str) -> str:
    """A name as a bare word when the grammar reads it back as that name, else quoted."""
    plain = _BARE.fullmatch(text) and not _REGISTER.fullmatch(text)
    return text if plain else quoted(text)


def comment_text(text: str) -> str:
    """`text` for a comment: unchanged when printable ASCII, else escaped as in a string."""
    return text if _PLAIN.fullmatch(text) else quoted(text)[1:-1]
