"""The interface every compiler pass implements.

A pass is a dataclass whose fields are its options (so `tile{rows=64}` on the
command line sets `rows: int = 64`), with a class-level `name` and an `apply`
that rewrites the module in place. The pass manager verifies the IR after
every pass, so a pass may assume valid input and must leave valid output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cimc.ir import Module


@dataclass
class Pass:
    name: ClassVar[str] = ""

    def apply(self, module: Module) -> None:
        raise NotImplementedError
