"""The interface every compiler pass implements.

A pass is a dataclass whose fields are its options (so `place{effort=0.5}` on the
command line sets the field `effort` to 0.5), with a class-level `name` and an `apply`
that rewrites the module in place. The pass manager verifies the IR after
every pass, so a pass may assume valid input and must leave valid output.
Passes write no files: the program, its image and the data header are
translations of the scheduled module (cimc/emit/).

A pass names the earlier passes whose results it reads in `requires`; each
pass says, in `missing_result`, where a module lacks its own results. The pass
manager refuses a pipeline that would run a pass before what it requires when
the module does not already hold those results, or when they are stale (a pass
that comes before them in cimc/pipeline.py ran again after them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cimc.ir.module import Module


@dataclass
class Pass:
    name: ClassVar[str] = ""
    # Passes whose results (ops they rewrite, attributes they add) `apply` reads.
    requires: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        """Where `module` lacks this pass's results, in words (None: nothing lacks them)."""
        return None

    def apply(self, module: Module) -> None:
        raise NotImplementedError
