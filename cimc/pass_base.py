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

from dataclasses import dataclass, field
from typing import ClassVar

from cimc.ir.module import Module
from cimc.targets import Target, load_target


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


def default_target() -> Target:
    """The target of a backend pass no pipeline gave one (isaac, as `--target`'s default)."""
    return load_target("isaac")


@dataclass
class BackendPass(Pass):
    """A pass that maps the module onto a chip. Its `target` is the pipeline's, loaded and
    validated once (`cimc opt --target`, `cimc.compile(target=...)`) and given to every
    backend pass by the pass manager's `set_target`; it is not a pass option, so no
    pipeline tiles a module for one chip and places it on another."""

    target: Target = field(default_factory=default_target, init=False, repr=False,
                           compare=False)
