"""schedule: order the layers, give every tensor its global memory, match messages.

Layers run in the module's topological order, one after the other, with a
barrier (`sync`) between them. Every runtime tensor gets a global memory
address (attribute `addr` on its producer; a `view` shares its operand's).
Each column block of a matvec gets a message tag, and the messages it implies
are listed as `messages` = flat `[src, dst, bytes, count, tag] * k`: each
core holding blocks of the column (other than the reducer) sends one partial
sum vector per output pixel, which the reducer receives. Finally the code is
generated once to size every core's local memory (`local_bytes` =
`[core, bytes] * k` on each layer, buffers plus the tables living on those
cores); running out is an error naming the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cimc.backend_codegen import generate, participants
from cimc.diagnostics import CimcError
from cimc.ir import Module, Op
from cimc.pass_base import Pass
from passes.lower import CHIP_KINDS, image_dims
from passes.tile import blocks_of
from targets import load_target

ALIGN = 16
MAX_TAG = (1 << 16) - 1


def messages(module: Module, op: Op) -> list[tuple[int, int, int, int, int]]:
    """(src, dst, bytes, count, tag) of the partial-sum messages of a matvec."""
    oh, ow, n = image_dims(module.values[op.outputs[0]])
    width = op.attrs["block_cols"]
    found = []
    for j, (reducer, tag) in enumerate(zip(op.attrs["reducers"], op.attrs["tags"], strict=True)):
        size = 4 * (min(n, (j + 1) * width) - j * width)
        senders = sorted({c for (_, jj), c in zip(blocks_of(op), op.attrs["block_cores"],
                                                  strict=True) if jj == j and c != reducer})
        found += [(c, reducer, size, oh * ow, tag) for c in senders]
    return found


@dataclass
class Schedule(Pass):
    name: ClassVar[str] = "schedule"
    target: str = "isaac"

    def apply(self, module: Module) -> None:
        target = load_target(self.target)
        top = 0
        tag = 0
        for op in module.ops():
            if op.kind == "view":
                source = module.producer(op.inputs[0])
                op.attrs["addr"] = source.attrs["addr"] if source is not None else 0
                continue
            host_input = op.kind == "quantize" and op.inputs[0] in module.inputs
            if op.kind not in CHIP_KINDS and not host_input:
                continue
            op.attrs["addr"] = top
            top += -(-module.values[op.outputs[0]].size // ALIGN) * ALIGN
            if op.kind == "matvec":
                columns = len(op.attrs["reducers"])
                op.attrs["tags"] = list(range(tag, tag + columns))
                tag += columns
                op.attrs["messages"] = [v for m in messages(module, op) for v in m]
        if tag > MAX_TAG + 1:
            raise CimcError(f"the model needs {tag} message tags, more than the {MAX_TAG + 1} "
                            "the network supports")
        if top > target.global_memory_bytes:
            raise CimcError(f"the model's tensors need {top} bytes of global memory but target "
                            f"{target.name!r} has {target.global_memory_bytes}")
        cores = generate(module, target)
        for op in module.ops():
            if op.kind in CHIP_KINDS and op.kind != "view":
                op.attrs["local_bytes"] = [
                    v for c in participants(op)
                    for v in (c, cores[c].peak + target.local_memory_bytes - cores[c].top)]
