"""replicate: decide how many copies of each matvec's weights to program.

The policy for now is one copy per matvec (`replicas = 1`): it is always
correct and never overcommits crossbars. Copying the weights of bottleneck
layers so pipeline stages balance comes with pipelined scheduling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cimc.ir import Module
from cimc.pass_base import Pass


@dataclass
class Replicate(Pass):
    name: ClassVar[str] = "replicate"
    target: str = "isaac"

    def apply(self, module: Module) -> None:
        for op in module.ops():
            if op.kind == "matvec":
                op.attrs["replicas"] = 1
