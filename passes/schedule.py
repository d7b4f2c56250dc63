"""schedule: choose the pipeline, give model inputs and outputs their global
memory, and check that the dataflow plan fits every core.

Options: `pipeline` = `latency` (one inference; every layer starts as soon as
the input rows it needs exist: fine-grained inter-layer pipelining) or
`throughput` (`stream` inferences enter the pipeline one after the other, image
m+1 starting while image m is still in flight), and `stream` (images per run,
default 1 in latency mode and 4 in throughput mode).

Every runtime tensor gets a global address (attribute `addr` on its producer,
16-byte aligned; a `view` shares its operand's): the program reads model
inputs there and writes model outputs there; other tensors stream core to
core and never touch global memory. The order in which each core works, the
messages and the buffers are the plan of cimc/analysis/plan.py; the pass
records `pipeline` and `stream` on every chip op, builds the plan and generates
the code, once per compile: both are kept with the module (Module.keep_analysis)
for emission and the report. It reports a core that runs out of local memory or
a model needing more message tags than the network has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cimc.analysis.plan import build
from cimc.codegen.generate import Generated, generate, phased_code
from cimc.diagnostics import CimcError
from cimc.dialect.chip import CHIP_KINDS
from cimc.dialect.host import chip_stores
from cimc.dialect.phased import home, phase_count, phase_of
from cimc.ir.module import Module, Op
from cimc.pass_base import BackendPass

ALIGN = 16
MAX_TAG = (1 << 16) - 1
MODES = ("latency", "throughput")


@dataclass
class Schedule(BackendPass):
    name: ClassVar[str] = "schedule"
    requires: ClassVar[tuple[str, ...]] = ("place",)
    pipeline: str = "latency"
    stream: int = 0  # 0: 1 image in latency mode, 4 in throughput mode
    batch: int = 1  # images per run of a module in phases (partition's batch)

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        for op in module.ops():
            if op.kind in CHIP_KINDS and "addr" not in op.attrs and "stream" not in op.attrs:
                return f"op {op.name!r} ({op.kind}) has no global address"
        return None

    def apply(self, module: Module) -> None:
        if self.pipeline not in MODES:
            raise CimcError(f"schedule: pipeline must be one of {', '.join(MODES)}, "
                            f"not {self.pipeline!r}")
        stream = self.stream or (4 if self.pipeline == "throughput" else 1)
        if stream < 1:
            raise CimcError(f"schedule: stream must be at least 1, not {stream}")
        target = self.target
        if phase_count(module) > 1:
            self._phased(module)
            return
        top = 0
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
            if op.kind in CHIP_KINDS:
                op.attrs.update(pipeline=self.pipeline, stream=stream)
        if top > target.global_memory_bytes:
            raise CimcError(f"the model's tensors need {top} bytes of global memory but target "
                            f"{target.name!r} has {target.global_memory_bytes}")
        plan = build(module, target, stream, self.pipeline == "throughput")
        if plan.tags > MAX_TAG + 1:
            raise CimcError(f"the model needs {plan.tags} message tags, more than the "
                            f"{MAX_TAG + 1} the network supports")
        module.keep_analysis(Generated(target, plan, generate(module, target, plan)))

    def _phased(self, module: Module) -> None:
        """A module in phases: the tensors the host or a later phase reads get global
        memory, one slot per image of the batch where a later phase reads them; each
        phase is planned and its code generated on its own, then joined (wprog, its
        tables loaded, the phase's code for the batch, sync), the tables in global memory
        after the tensors (cimc.codegen.generate.phased_code)."""
        target, batch = self.target, self.batch
        if not 1 <= batch <= 2**16:
            raise CimcError(f"schedule: batch {batch}: give an integer 1..65536")
        top = 0
        for op in module.ops():
            stored = op.kind == "quantize" and op.inputs[0] in module.inputs
            if op.kind in CHIP_KINDS:
                if op.kind == "view":  # where its source is, if stored
                    source = home(module, op.inputs[0])
                    if source is not None and "addr" in source.attrs:
                        op.attrs.update({k: source.attrs[k] for k in ("addr", "image_stride")
                                         if k in source.attrs})
                    continue
                op.attrs.update(pipeline=self.pipeline, stream=batch)
                value = op.outputs[0]
                later = any(phase_of(c) > phase_of(op) for c in _readers(module, value))
                stored = later or chip_stores(module, value)
                if later:
                    size = -(-module.values[value].size // ALIGN) * ALIGN
                    op.attrs.update(addr=top, image_stride=size)
                    top += batch * size
                    continue
            if stored:
                op.attrs["addr"] = top
                top += -(-module.values[op.outputs[0]].size // ALIGN) * ALIGN
        generated = phased_code(module, target, batch)
        for plan in generated.phases:
            if plan.tags > MAX_TAG + 1:
                raise CimcError(f"a phase of the model needs {plan.tags} message tags, more "
                                f"than the {MAX_TAG + 1} the network supports")
        end = max([top, *(address + len(data) for address, data in generated.global_data)])
        if end > target.global_memory_bytes:
            raise CimcError(f"the model's tensors and the phases' tables need {end} bytes of "
                            f"global memory (spills of {batch} images between phases) but "
                            f"target {target.name!r} has {target.global_memory_bytes}; lower "
                            "--batch or choose a target with more global memory")
        module.keep_analysis(generated)


def _readers(module: Module, value: str) -> list[Op]:
    """The chip ops reading `value`, directly or through views."""
    found = []
    for op in module.consumers(value):
        if op.kind == "view":
            found += _readers(module, op.outputs[0])
        elif op.kind in CHIP_KINDS:
            found.append(op)
    return found
