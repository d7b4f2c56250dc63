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
from cimc.codegen.generate import Generated, generate
from cimc.diagnostics import CimcError
from cimc.dialect.chip import CHIP_KINDS
from cimc.ir.module import Module
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

    @classmethod
    def missing_result(cls, module: Module) -> str | None:
        for op in module.ops():
            if op.kind in CHIP_KINDS and "addr" not in op.attrs:
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
